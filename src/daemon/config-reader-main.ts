import { writeSync } from 'node:fs';
import { serialize } from 'node:v8';
import { loadConfig } from '../config/load.js';

// The daemon's config reader (config-reader.ts): loadConfig(argv[2]) as V8's serialization on stdout.

const answer = serialize(loadConfig(process.argv[2]!));
for (let at = 0; at < answer.length;) at += writeSync(1, answer, at);
