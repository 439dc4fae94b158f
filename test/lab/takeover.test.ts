import t, { type Test } from 'tap';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { startCapture, type Capture } from '../../lab/capture.js';
import { labConfig } from '../../lab/config.js';
import { ECHO, FIPS, Lab } from '../../lab/lab.js';
import { macvlanName, routeTableOf } from '../../src/plan/naming.js';

// Selected traffic leaves its host SNATed to its floating IP or toward the IP's owner,
// never otherwise (docs/datapath.md, "The leak guard").
//
// The case the chaos soak found under compound faults: a host steered a workload's
// traffic to another owner, then takes the floating IP itself (every other candidate
// gone). A connection the workload began while the owner was unreachable is already in
// this host's conntrack table, bound to no NAT: NAT is decided on a connection's first
// packet only. Without care its next SYN leaves through the main table with the
// workload's own address, to a service that allowlists the floating IP.

const [FIP_A, FIP_B] = FIPS;
const IF_A = macvlanName({ family: 4, value: 0xc0a80164n });
const C1 = '10.10.1.2';

t.test('leak guard', async (t) => {
  const lab = await Lab.create();
  t.teardown(() => lab.destroy());
  const cfg = join(lab.dir, 'config.yaml');
  writeFileSync(cfg, labConfig(lab, { noGateway: 'drop' }));
  // h1 (c1's host) owns the other IP, so its SNAT is active and it tracks connections.
  const apply = (host: string, ownerA: string) =>
    lab.egress(host, ['apply', '-c', cfg, '-n', host, '--owner', `${FIP_A}=${ownerA}`, '--owner', `${FIP_B}=h1`]);
  for (const h of lab.hosts) await apply(h.name, 'h3');
  t.equal(await lab.probe('c1', ECHO.inPolicy), FIP_A, 'c1 (behind h1) leaves through h3');
  const capture: Capture = await startCapture(lab, `ip dst host ${ECHO.inPolicy} and ip src host ${C1}`);
  t.teardown(() => capture.stop());
  const noLeak = async (t: Test, what: string) => {
    await sleep(200);
    const leaked = capture.packets();
    t.equal(leaked.length, 0, `nothing reached the router with c1's own address ${what}`, {
      first: leaked.slice(0, 3).map((p) => p.line),
    });
  };

  await t.test('a route of ours deleted by hand: the packets toward the owner are dropped', async (t) => {
    const table = routeTableOf(1);
    await lab.sh('h1', `ip route del default table ${table}`);
    t.equal(await lab.probe('c1', ECHO.inPolicy, { timeoutS: 1 }), undefined, 'no answer: nothing left');
    await noLeak(t, 'while h1 had no route to the owner');
    const r = await apply('h1', 'h3');
    t.match(r.stdout, `route table ${table}: default via ${FIP_A}`, 'the next apply restores the route');
    t.equal(await lab.probe('c1', ECHO.inPolicy), FIP_A, 'and traffic flows');
  });

  await t.test('a connection begun while the owner was gone is SNATed when its own host takes the IP', async (t) => {
    // The owner vanishes as a killed and parked one does: its macvlan, and so the IP, is gone.
    await lab.sh('h3', `ip link del ${IF_A}`);
    // c1 connects meanwhile: h1 routes the SYN toward the vanished IP and tracks the connection.
    const pending = lab.probe('c1', ECHO.inPolicy, { timeoutS: 6 });
    let tracked = '';
    for (let i = 0; i < 50 && !/SYN_SENT src=10\.10\.1\.2 /.test(tracked); i++) {
      await sleep(20);
      tracked = (await lab.sh('h1', 'conntrack -L 2>/dev/null', { allowFail: true })).stdout;
    }
    t.match(
      tracked,
      /SYN_SENT src=10\.10\.1\.2 .* \[UNREPLIED\] src=203\.0\.113\.10 dst=10\.10\.1\.2 /,
      'h1 tracks it, un-NATed',
    );
    const r = await apply('h1', 'h1');
    t.match(r.stdout, `add address ${FIP_A}/32`, 'h1 takes the IP');
    t.match(r.stdout, `flush connections tracked for ${FIP_A} elsewhere`);
    t.equal(await pending, FIP_A, 'the pending connection completes (its SYN retransmitted), with the floating IP');
    await noLeak(t, 'across the takeover');
    t.equal(await lab.probe('c1', ECHO.inPolicy), FIP_A, 'new connections too');
  });
});
