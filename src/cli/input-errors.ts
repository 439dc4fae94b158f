import { EncodeError } from '../cluster/protocol.js';
import { KeyError } from '../config/key.js';
import { UnknownNodeError } from '../config/model.js';
import { PlanError } from '../plan/desired.js';
import { InputError } from './errors.js';

/** Errors that mean the user's input is wrong (exit 2), whichever command raised them. Loaded only on failure. */
export const isInputError = (e: unknown): boolean =>
  e instanceof InputError ||
  e instanceof UnknownNodeError ||
  e instanceof PlanError ||
  e instanceof EncodeError ||
  e instanceof KeyError;
