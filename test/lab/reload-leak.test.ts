import t from 'tap';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { startCapture } from '../../lab/capture.js';
import { labConfig, policiesYaml } from '../../lab/config.js';
import { ECHO, FIPS, Lab } from '../../lab/lab.js';

// A reload that changes who is selected swaps the content-addressed source map: the new
// map and the rule that names it used to go in one nft transaction, and the kernel
// missed lookups in a set made in the transaction that starts using it, for a moment
// after the commit. A packet missed is left unmarked, so the main table routes it with
// the workload's own address (the chaos soak's "leak at a reload"). The switch now finds
// its sets already made (src/dataplane/nftdiff.ts).

const [FIP_A, FIP_B] = FIPS;
const C1 = '10.10.1.2';
const SWAPS = 10;

t.test('a reload that swaps the source map leaks nothing, under a flood', async (t) => {
  const lab = await Lab.create();
  t.teardown(() => lab.destroy());
  const a = join(lab.dir, 'a.yaml');
  const b = join(lab.dir, 'b.yaml');
  const base = labConfig(lab, { noGateway: 'drop' });
  writeFileSync(a, base);
  // One more policy, for sources nobody uses: the source map changes, c1's entry does not.
  const audit = policiesYaml([
    { name: 'audit', from: { cidrs: ['10.10.9.0/24'] }, to: '198.51.100.99/32', gateway: 'default', egressIP: FIP_B },
  ]);
  writeFileSync(b, `${base.trimEnd()}\n${audit}\n`);
  for (const [mode, ownerA] of [
    ['c1 steered to another owner', 'h3'],
    ["c1's host owns the IP", 'h1'],
  ] as const) {
    const apply = (host: string, cfg: string) =>
      lab.egress(host, ['apply', '-c', cfg, '-n', host, '--owner', `${FIP_A}=${ownerA}`, '--owner', `${FIP_B}=h2`]);
    for (const h of lab.hosts) await apply(h.name, a);
    t.equal(await lab.probe('c1', ECHO.inPolicy), FIP_A, `${mode}: c1 leaves with ${FIP_A}`);
    const capture = await startCapture(lab, `ip src host ${C1}`);
    // As many datagrams as c1 can send, each from a new socket (a new connection: NAT is
    // decided on a connection's first packet), to the discard port of a policy destination.
    const flood = lab.sh(
      'c1',
      `timeout ${SWAPS} python3 -c "import socket
while True: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('${ECHO.inPolicy}', 9))" || true`,
      { allowFail: true },
    );
    await sleep(300);
    for (let i = 0; i < SWAPS; i++) await apply('h1', i % 2 ? a : b);
    await flood;
    await sleep(300);
    const leaked = [...capture.packets()];
    await capture.stop();
    t.equal(leaked.length, 0, `${mode}: ${SWAPS} reloads, nothing reached the router with c1's address`, {
      first: leaked.slice(0, 3).map((p) => p.line),
    });
    await apply('h1', a);
  }
});
