import t from 'tap';
import { sendGratuitousArp } from '../../src/dataplane/arp.js';

// A macvlan deleted while its announcements repeat (the IP given up at once: a handover,
// a step back) is no error: the repeats stop quietly.

t.test('announcements for a link that is gone stop quietly', async (t) => {
  const errors: string[] = [];
  await sendGratuitousArp('enatgone0', '192.0.2.1', (e) => errors.push(e.message), 2);
  t.same(errors, [], 'no error for a link that does not exist');
});
