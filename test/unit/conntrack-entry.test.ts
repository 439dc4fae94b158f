import t from 'tap';
import {
  buildAttributes,
  insertAttributes,
  parseEntry,
  snatEntry,
  type RawEntry,
  type SyncedEntry,
} from '../../src/dataplane/conntrack-entry.js';
import { IPS_ASSURED, IPS_DST_NAT, IPS_SEEN_REPLY, IPS_SRC_NAT } from '../../src/dataplane/ctnetlink.js';
import { FrameReader, parseEvents } from '../../src/dataplane/conntrack-events.js';
import { rng } from '../helpers.js';

const FIP = '192.168.1.100';
const synced: SyncedEntry = {
  proto: 6,
  src: '10.10.1.2',
  dst: '203.0.113.10',
  sport: 40000,
  dport: 443,
  natIp: FIP,
  natPort: 41000,
  status: IPS_SEEN_REPLY | IPS_ASSURED,
  timeout: 431999,
  tcpState: 3,
};
const raw = (over: Partial<RawEntry> = {}): RawEntry => ({
  orig: { src: '10.10.1.2', dst: '203.0.113.10', proto: 6, sport: 40000, dport: 443 },
  reply: { src: '203.0.113.10', dst: FIP, proto: 6, sport: 443, dport: 41000 },
  status: IPS_SEEN_REPLY | IPS_ASSURED | IPS_SRC_NAT | 8,
  timeout: 431999,
  tcpState: 3,
  mark: 0,
  ...over,
});

t.test('an insert request reads back as the entry, untranslated, with the kernel to do the NAT', async (t) => {
  const back = parseEntry(insertAttributes(synced))!;
  t.same(back.orig, { src: '10.10.1.2', dst: '203.0.113.10', proto: 6, sport: 40000, dport: 443 });
  t.same(
    back.reply,
    { src: '203.0.113.10', dst: '10.10.1.2', proto: 6, sport: 443, dport: 40000 },
    'the reply tuple is the inverse of the original: CTA_NAT_SRC asks for the floating IP and port',
  );
  t.equal(back.status, IPS_SEEN_REPLY | IPS_ASSURED | 8, 'SEEN_REPLY, ASSURED and CONFIRMED (the kernel refuses less)');
  t.equal(back.tcpState, 3);
  t.equal(back.timeout, 431999);
  t.equal(back.mark, 0, 'no mark: the flush of a taken IP (by mark) leaves it');
  const udp = parseEntry(insertAttributes({ ...synced, proto: 17, tcpState: 0 }))!;
  t.equal(udp.orig.proto, 17);
});

t.test('which entries are synced', async (t) => {
  const ips = new Set([FIP]);
  t.same(snatEntry(raw(), ips), synced, 'a TCP connection SNATed to the floating IP');
  t.equal(snatEntry(raw(), new Set(['192.168.1.101'])), undefined, 'SNATed to an IP this node does not hold');
  t.equal(
    snatEntry(raw({ orig: { ...raw().orig, src: FIP } }), ips),
    undefined,
    'a connection the floating IP itself began',
  );
  t.equal(snatEntry(raw({ status: raw().status | IPS_DST_NAT }), ips), undefined, 'DNAT too');
  t.equal(
    snatEntry(raw({ orig: { ...raw().orig, proto: 1 }, reply: { ...raw().reply, proto: 1 } }), ips),
    undefined,
    'ICMP',
  );
  t.equal(snatEntry(raw({ tcpState: 7 }), ips)!.tcpState, 7);
  t.equal(snatEntry(raw({ status: 8 | IPS_SRC_NAT }), ips)!.status, 0, 'only SEEN_REPLY and ASSURED are kept');
});

t.test('garbage never throws', async (t) => {
  const next = rng(5);
  for (let i = 0; i < 3000; i++) {
    const b = Buffer.from(Array.from({ length: Math.floor(next() * 200) }, () => Math.floor(next() * 256)));
    parseEntry(b);
    parseEvents(b);
  }
  const valid = insertAttributes(synced);
  for (let i = 0; i < 3000; i++) {
    const b = Buffer.from(valid);
    for (let j = 0; j < 4; j++) b[Math.floor(next() * b.length)] = Math.floor(next() * 256);
    parseEntry(b);
  }
  t.pass('no input threw');
});

t.test("the event listener's frames are split wherever the pipe cuts them", async (t) => {
  const frames = [Buffer.from('abc'), Buffer.alloc(0), Buffer.from('0123456789')];
  const wire = Buffer.concat([
    Buffer.from('ready\n'),
    ...frames.flatMap((f) => {
      const len = Buffer.alloc(4);
      len.writeUInt32BE(f.length);
      return [len, f];
    }),
  ]);
  for (const cut of [1, 3, 7, 11, wire.length - 1]) {
    const r = new FrameReader();
    const got: string[] = [];
    r.push(wire.subarray(0, cut), (d) => got.push(d.toString()));
    r.push(wire.subarray(cut), (d) => got.push(d.toString()));
    t.same(got, ['abc', '', '0123456789'], `cut at ${cut}`);
  }
});

t.test('the patched template is byte for byte the attributes built one by one', async (t) => {
  const next = rng(9);
  const n = (max: number) => Math.floor(next() * max);
  const ip = () => `${n(256)}.${n(256)}.${n(256)}.${n(256)}`;
  for (let i = 0; i < 500; i++) {
    const e: SyncedEntry = {
      proto: i % 2 ? 6 : 17,
      src: ip(),
      dst: ip(),
      sport: n(65536),
      dport: n(65536),
      natIp: ip(),
      natPort: n(65536),
      status: n(8),
      timeout: n(2 ** 32),
      tcpState: i % 2 ? n(10) : 0,
    };
    if (!insertAttributes(e).equals(buildAttributes(e))) {
      t.fail(`differs for ${JSON.stringify(e)}`);
      return;
    }
  }
  t.pass('500 random entries, TCP and UDP');
});
