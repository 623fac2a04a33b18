import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parseEventFast, usageEvent } from './events.ts';

const nameChars = fc.constantFrom(...'abcXYZ019._:@-/ é\t'.split(''));
const name = fc.oneof(fc.string({ unit: nameChars, minLength: 0, maxLength: 130 }), fc.string(), fc.constant('a'.repeat(129)));
const tokens = fc.oneof(
  fc.integer({ min: -5, max: 5 }),
  fc.constant(1_000_000_000_000),
  fc.constant(1_000_000_000_001),
  fc.double(),
  fc.constant('5'),
);
const timestamp = fc.oneof(
  fc.date({ noInvalidDate: true }).map((date) => date.toISOString()),
  fc.constantFrom('2026-02-30T00:00:00Z', '2026-05-01T12:00:00+02:00', '2026-05-01 12:00:00', '2026-05-01T12:00:00', ''),
  fc.string(),
);
const candidate = fc.record(
  {
    tenant: name,
    feature: name,
    tokens,
    id: fc.oneof(fc.string({ maxLength: 130 }), fc.constant('ok-id'), fc.integer()),
    timestamp,
    extra: fc.anything(),
  },
  { requiredKeys: [] },
);

describe('parseEventFast', () => {
  it('never accepts an event the schema refuses, and agrees on what it accepts', () => {
    fc.assert(
      fc.property(fc.oneof(candidate, fc.anything()), (raw) => {
        const fast = parseEventFast(raw);
        const schema = usageEvent.safeParse(raw);
        if (fast !== undefined) {
          expect(schema.success).toBe(true);
          expect(fast).toEqual(schema.data);
        }
      }),
      { numRuns: 5_000 },
    );
  });

  it('takes the fast path for well-formed events', () => {
    expect(
      parseEventFast({ tenant: 'acme', feature: 'openai/gpt-4o', tokens: 5, id: 'x-1', timestamp: '2026-05-01T12:00:00Z' }),
    ).toBeDefined();
    expect(parseEventFast({ tenant: 'acme', feature: 'f', tokens: 1.5 })).toBeUndefined();
  });
});
