/**
 * Who may call what: each service declares an {@link AccessTable} (method → roles) next to its
 * handlers, and `startServer` wraps every handler with {@link guardImplementation}, which checks
 * the caller's verified identity against the table before the handler runs and refuses to start
 * a service with a method the table does not name (no RPC is open by accident). Handlers read
 * the checked caller with {@link callerOf} (a vmm registering, a migration stream arriving).
 *
 * @packageDocumentation
 */
import type * as grpc from '@grpc/grpc-js';
import { ServiceError, toGrpcError } from '../errors.js';
import type { Logger } from '../logger.js';
import {
  INSECURE_CALLER,
  peerIdentity,
  requireRole,
  ROLES,
  type Caller,
  type HasAuthContext,
  type Role,
} from './identity.js';

/**
 * Roles allowed per method, by the method's name in the proto (`GetInfo`, `TransferLease`).
 * Every method of the service must have an entry; an empty list allows no caller at all.
 */
export type AccessTable = Readonly<Record<string, readonly Role[]>>;

/** Every role: for calls any authenticated cluster member may make (GetInfo, reflection). */
export const ANY_ROLE: readonly Role[] = ROLES;

const callers = new WeakMap<object, Caller>();

/**
 * The caller of a server call that went through the access check.
 *
 * @throws ServiceError `SERVICE_INTERNAL` for a call that did not (a handler registered
 *   outside `startServer`): a handler never guesses who called
 */
export function callerOf(call: object): Caller {
  const c = callers.get(call);
  if (c === undefined) {
    throw new ServiceError(
      'SERVICE_INTERNAL',
      'this call did not pass the access check; register its service through startServer',
    );
  }
  return c;
}

/**
 * The id of a secure call's verified caller, or null for a plaintext (`--insecure`) server,
 * where nobody is authenticated.
 */
export function callerId(call: object): string | null {
  const c = callerOf(call);
  return c.secure ? c.identity.id : null;
}

/** The name a method has in the proto (the last part of its path). */
function methodName(attrs: grpc.MethodDefinition<unknown, unknown>): string {
  return attrs.path.slice(attrs.path.lastIndexOf('/') + 1);
}

/**
 * Checks a table against a service definition: every method has an entry and every entry names
 * a method.
 *
 * @throws ServiceError `SERVICE_INVALID_CONFIG` naming the methods without an entry, or the
 *   entries without a method
 */
export function checkAccessTable(
  service: string,
  definition: grpc.ServiceDefinition,
  access: AccessTable,
): void {
  const methods = Object.values(definition).map((a) =>
    methodName(a as grpc.MethodDefinition<unknown, unknown>),
  );
  const missing = methods.filter((m) => !Object.hasOwn(access, m));
  const unknown = Object.keys(access).filter((m) => !methods.includes(m));
  if (missing.length > 0 || unknown.length > 0) {
    const parts: string[] = [];
    if (missing.length > 0) parts.push(`no access entry for ${missing.join(', ')}`);
    if (unknown.length > 0) parts.push(`entries for methods it lacks: ${unknown.join(', ')}`);
    throw new ServiceError(
      'SERVICE_INVALID_CONFIG',
      `${service}: ${parts.join('; ')}; give every method of its access table the roles that ` +
        'may call it',
    );
  }
}

/* eslint-disable @typescript-eslint/no-explicit-any -- one wrapper for every call shape */
type AnyHandler = (call: any, callback?: (err: unknown) => void) => void;
/* eslint-enable @typescript-eslint/no-explicit-any */

/**
 * Wraps every handler of `implementation` with the access check of `access`: on a secure server
 * (`secure`) a call without a verified identity is refused UNAUTHENTICATED and a caller of
 * another role PERMISSION_DENIED, before the handler sees it; on a plaintext server every call
 * passes as {@link INSECURE_CALLER}. Either way the handler finds its caller with
 * {@link callerOf}.
 *
 * @throws ServiceError `SERVICE_INVALID_CONFIG` when the table and the definition differ
 *   ({@link checkAccessTable})
 */
export function guardImplementation(
  service: string,
  definition: grpc.ServiceDefinition,
  implementation: grpc.UntypedServiceImplementation,
  access: AccessTable,
  secure: boolean,
  logger: Logger,
): grpc.UntypedServiceImplementation {
  checkAccessTable(service, definition, access);
  const out: Record<string, AnyHandler> = {};
  for (const [key, a] of Object.entries(definition)) {
    const attrs = a as grpc.MethodDefinition<unknown, unknown>;
    const implKey = key in implementation ? key : (attrs.originalName ?? key);
    const handler = implementation[implKey] as unknown as AnyHandler | undefined;
    if (handler === undefined) continue; // grpc-js answers UNIMPLEMENTED for it
    const method = methodName(attrs);
    const roles = access[method]!;
    const what = `${service}.${method}`;
    out[implKey] = (call: HasAuthContext & object, callback?: (err: unknown) => void) => {
      let caller: Caller | null = INSECURE_CALLER;
      if (secure) {
        const identity = peerIdentity(call);
        caller = identity === null ? null : { secure: true, identity };
      }
      try {
        requireRole(caller, roles, what);
      } catch (err) {
        refuse(call, callback, err, what, caller, logger);
        return;
      }
      callers.set(call, caller!);
      handler(call, callback);
    };
  }
  return out as unknown as grpc.UntypedServiceImplementation;
}

function refuse(
  call: object,
  callback: ((err: unknown) => void) | undefined,
  err: unknown,
  what: string,
  caller: Caller | null,
  logger: Logger,
): void {
  const grpcErr = toGrpcError(err);
  logger.warn(
    {
      call: what,
      caller: caller?.secure === true ? caller.identity : null,
      error: grpcErr.details,
    },
    'call refused by the access check',
  );
  if (typeof callback === 'function') callback(grpcErr);
  else (call as NodeJS.EventEmitter).emit('error', grpcErr);
}
