import assert from 'node:assert/strict'
import { test } from 'node:test'
import { isoTimestamp } from '../src/usage-build.js'

test('isoTimestamp writes what Date#toISOString writes, across ms, second, day and year boundaries', () => {
  const starts = [0, Date.UTC(2026, 10, 26, 10, 59, 59, 990), Date.UTC(2026, 11, 31, 23, 59, 59, 995), Date.UTC(2024, 1, 29, 12)]
  for (const start of starts) {
    for (let now = start; now < start + 1500; now += 7) assert.equal(isoTimestamp(now), new Date(now).toISOString())
  }
  // Out of order (clock steps back) and repeated values.
  for (const now of [starts[1], starts[0], starts[1], starts[1], 1_795_690_026_001]) {
    assert.equal(isoTimestamp(now as number), new Date(now as number).toISOString())
  }
})
