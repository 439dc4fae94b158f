import t from 'tap';
import type { Connection } from '../../src/dataplane/conntrack-dump.js';
import { PORT_WARN_RATIO, portPressure, SNAT_PORTS } from '../../src/daemon/snat-ports.js';

// SNAT port pressure from a conntrack dump: per floating IP, its connections and the
// share of the port range its busiest destination takes.

const FIP = '192.168.1.100';
const snated = (src: string, dst: string, dport: number, sport: number, proto = 6): Connection => ({
  orig: { src, dst, proto, sport, dport },
  reply: { src: dst, dst: FIP, proto, sport: dport, dport: sport },
});

t.test('connections per floating IP, and the busiest destination', async (t) => {
  const conns: Connection[] = [
    snated('10.10.1.2', '203.0.113.10', 443, 40000),
    snated('10.10.1.3', '203.0.113.10', 443, 40000 + 1),
    snated('10.10.1.2', '203.0.113.10', 80, 40002),
    snated('10.10.1.2', '203.0.113.10', 443, 40003, 17),
    // Not SNATed to it: another IP, and the IP's own traffic (its source is the IP).
    {
      ...snated('10.10.1.2', '203.0.113.10', 443, 1),
      reply: { src: '203.0.113.10', dst: '192.168.1.7', proto: 6, sport: 443, dport: 1 },
    },
    {
      orig: { src: FIP, dst: '203.0.113.10', proto: 6, sport: 5, dport: 443 },
      reply: { src: '203.0.113.10', dst: FIP, proto: 6, sport: 443, dport: 5 },
    },
  ];
  const p = portPressure(conns, [FIP, '192.168.1.101']);
  t.same(p[FIP], { connections: 4, busiest: { destination: '203.0.113.10:443/tcp', ports: 2, usage: 2 / SNAT_PORTS } });
  t.same(p['192.168.1.101'], { connections: 0, busiest: null }, 'an IP without connections');
});

t.test(`a warning above ${PORT_WARN_RATIO * 100} % of the range toward one destination`, async (t) => {
  const toOne = (n: number) => Array.from({ length: n }, (_, i) => snated('10.10.1.2', '203.0.113.10', 443, 1024 + i));
  const under = portPressure(toOne(Math.floor(SNAT_PORTS * PORT_WARN_RATIO)), [FIP])[FIP]!;
  t.equal(under.warning, undefined, 'at the threshold: no warning');
  const over = portPressure(toOne(Math.floor(SNAT_PORTS * PORT_WARN_RATIO) + 1), [FIP])[FIP]!;
  t.match(over.warning, /^192\.168\.1\.100 uses \d+ of 64512 source ports toward 203\.0\.113\.10:443\/tcp \(80 %\)/);
  const spread = Array.from({ length: SNAT_PORTS }, (_, i) => snated('10.10.1.2', `203.0.113.${i % 4}`, 443, 1024 + i));
  t.equal(
    portPressure(spread, [FIP])[FIP]!.warning,
    undefined,
    'as many connections over four destinations: no pressure',
  );
});
