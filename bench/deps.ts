import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { REPO } from '../lab/paths.js';

// What only `make bench` needs (keepalived, iperf3, stress-ng), installed by the project's
// own script where missing, so that `node dist/bench/main.js <section>` works alone too.

export function benchDeps(): void {
  execFileSync(join(REPO, 'scripts/install-deps.sh'), ['--bench'], { stdio: ['ignore', 'inherit', 'inherit'] });
}
