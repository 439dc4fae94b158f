// Where egress-natd looks for its files by default (the .deb and `make install` put them
// there). A module of its own, free of imports, so the command line can name them cheaply.

export const DEFAULT_CONFIG = '/etc/egress-natd/config.yaml';
export const DEFAULT_KEY = '/etc/egress-natd/cluster.key';
export const DEFAULT_INCARNATION_FILE = '/var/lib/egress-natd/incarnation';
