/**
 * A vCPU pool thread (the worker pool.ts starts): it runs the VMs the pool places on it, as
 * scheduler.ts describes, until the pool tells it to end. See protocol.ts for the contract with
 * the host.
 *
 * @packageDocumentation
 */
import { parentPort, receiveMessageOnPort, workerData } from 'node:worker_threads';
import type { PoolThreadData, ThreadCommand } from './protocol.js';
import { Scheduler } from './scheduler.js';

const port = parentPort!;
const data = workerData as PoolThreadData;
new Scheduler({
  control: data.control,
  hush: data.hush,
  post: (msg, transfer) => port.postMessage(msg, transfer ?? []),
  receive: () => receiveMessageOnPort(port)?.message as ThreadCommand | undefined,
}).run();
