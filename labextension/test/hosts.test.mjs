// Unit tests of the sidebar's pure parts (compiled by `npm run build:lib`): `npm test`.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { HostTally, formatDuration, hostColour } from '../lib/hosts.js';
import { nextDelay } from '../lib/poller.js';

const record = (task, worker, hostname) => ({
  engine: 'dask',
  cluster: 'c',
  task,
  worker,
  hostname,
  started: 1,
  finished: 2,
  state: 'done'
});

test('tasks are counted per host; a worker named later takes its tasks along', () => {
  const tally = new HostTally();
  const changed = tally.add({
    records: [record('a', 'w1', 'h1'), record('b', 'w2', null), record('c', 'w1', 'h1')],
    counts: {},
    workers: { w1: 'h1' },
    cursor: 3
  });
  assert.equal(changed, true);
  assert.deepEqual(
    tally.counts().map(c => [c.hostname, c.tasks]),
    [['h1', 2]]
  );
  assert.equal(tally.pending(), 1);
  assert.equal(tally.cursor, 3);

  tally.add({ records: [], counts: {}, workers: { w1: 'h1', w2: 'h2' }, cursor: 3 });
  assert.deepEqual(
    tally.counts().map(c => [c.hostname, c.tasks]),
    [
      ['h1', 2],
      ['h2', 1]
    ]
  );
  assert.equal(tally.pending(), 0);
  assert.equal(tally.taskWorkers(), 2);
  assert.equal(tally.recent()[0].task, 'c', 'newest first');
  assert.equal(tally.recent()[1].hostname, 'h2', 'filled in once known');
});

test('an answer with nothing new is not a change', () => {
  const tally = new HostTally();
  tally.add({ records: [record('a', 'w1', 'h1')], counts: {}, workers: { w1: 'h1' }, cursor: 1 });
  assert.equal(tally.add({ records: [], counts: {}, workers: { w1: 'h1' }, cursor: 1 }), false);
});

test('every host keeps its own colour, distinct from the others', () => {
  const tally = new HostTally();
  const colours = ['h1', 'h2', 'h3', 'h4'].map(h => tally.colour(h));
  assert.equal(new Set(colours).size, 4);
  assert.equal(tally.colour('h2'), colours[1]);
  const many = Array.from({ length: 40 }, (_, i) => hostColour(i));
  assert.equal(new Set(many).size, 40);
});

test('polling backs off when quiet or failing, up to the cap, and speeds up on news', () => {
  const backoff = { interval: 1000, max: 10000, growth: 2 };
  let delay = 1000;
  const seen = [];
  for (let i = 0; i < 6; i++) {
    delay = nextDelay(delay, i % 2 ? 'failed' : 'quiet', backoff);
    seen.push(delay);
  }
  assert.deepEqual(seen, [2000, 4000, 8000, 10000, 10000, 10000]);
  assert.equal(nextDelay(delay, 'changed', backoff), 1000);
});

test('durations read to the millisecond, and in microseconds below one', () => {
  assert.equal(formatDuration(2.5), '2.500 s');
  assert.equal(formatDuration(1), '1.000 s');
  assert.equal(formatDuration(0.1234), '123 ms');
  assert.equal(formatDuration(0.001), '1 ms');
  assert.equal(formatDuration(0.000042), '42 µs');
  assert.equal(formatDuration(0), '0 µs');
  assert.equal(formatDuration(-1), '');
  assert.equal(formatDuration(Number.NaN), '');
});

test('the place comes from the answers: workers when they share the machine', () => {
  const tally = new HostTally();
  assert.equal(tally.place, 'host');
  tally.add({ records: [record('a', 'w1', null)], counts: {}, workers: {}, cursor: 1 });
  assert.equal(tally.place, 'host');
  const changed = tally.add({
    records: [record('b', 'w1', 'w1'), record('c', 'w2', 'w2')],
    counts: {},
    workers: { w1: 'w1', w2: 'w2' },
    place: 'worker',
    cursor: 3
  });
  assert.equal(changed, true);
  assert.equal(tally.place, 'worker');
  assert.deepEqual(
    tally.counts().map(c => [c.hostname, c.tasks]),
    [
      ['w1', 2],
      ['w2', 1]
    ]
  );
});
