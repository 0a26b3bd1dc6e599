import { EventEmitter } from 'node:events';
import { describe, expect, it } from 'vitest';
import { anyEvent } from './events.js';

describe('anyEvent', () => {
  it('resolves at the first named event and leaves no listener behind', async () => {
    const e = new EventEmitter();
    let done = false;
    const p = anyEvent(e, ['drain', 'close']).then(() => (done = true));
    e.emit('other');
    await Promise.resolve();
    expect(done).toBe(false);
    e.emit('close');
    await p;
    expect(done).toBe(true);
    expect(e.listenerCount('drain') + e.listenerCount('close')).toBe(0);
  });
});
