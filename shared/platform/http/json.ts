const rawJson = (JSON as unknown as { rawJSON(text: string): unknown }).rawJSON;
const exactReplacer = (_key: string, item: unknown): unknown => (typeof item === 'bigint' ? rawJson(item.toString()) : item);

/** JSON that keeps 64-bit sums exact: bigints are written as JSON numbers with every digit. */
export function stringifyExact(value: unknown): string {
  try {
    // Most answers hold no bigint; a replacer would cost every one of them a call per key.
    return JSON.stringify(value);
  } catch (error) {
    if (!(error instanceof TypeError)) throw error;
    return JSON.stringify(value, exactReplacer);
  }
}

/**
 * stringifyExact for a value known to hold bigints (a usage answer always does): the replacer
 * straight away, without first letting JSON.stringify throw on the first bigint.
 */
export function stringifyWithBigints(value: unknown): string {
  return JSON.stringify(value, exactReplacer);
}
