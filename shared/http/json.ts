/** JSON that keeps 64-bit sums exact: bigints are written as JSON numbers with every digit. */
export function stringifyExact(value: unknown): string {
  return JSON.stringify(value, (_key, item: unknown) =>
    typeof item === 'bigint' ? (JSON as unknown as { rawJSON(text: string): unknown }).rawJSON(item.toString()) : item,
  );
}
