// What every command shares: its output lines, its exit codes, and the error that means
// "bad input" (exit 2). Kept free of imports so that the cheapest commands stay cheap.

/** Exit codes: 0 success, 1 the host could not be changed, 2 bad input (config or arguments). */
export const EXIT_RUNTIME = 1;
export const EXIT_INPUT = 2;

export class InputError extends Error {}

export const out = (line: string): void => void process.stdout.write(`${line}\n`);
export const err = (line: string): void => void process.stderr.write(`${line}\n`);
