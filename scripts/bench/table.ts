export type Verdict = 'PASS' | 'FAIL' | 'info';

export interface Row {
  scenario: string;
  measured: string;
  target: string;
  result: Verdict;
}

/** The one table the bench prints, as Markdown (readable in a terminal, pasted as is into the docs). */
export function renderTable(rows: readonly Row[]): string {
  const header: [string, string, string, string] = ['scenario', 'measured', 'target', 'result'];
  const cells = rows.map((row): [string, string, string, string] => [
    row.scenario,
    row.measured,
    row.target,
    row.result === 'info' ? '—' : row.result,
  ]);
  const widths = header.map((title, column) => Math.max(title.length, ...cells.map((row) => row[column]!.length)));
  const line = (row: string[]) => `| ${row.map((cell, column) => cell.padEnd(widths[column]!)).join(' | ')} |`;
  return [line(header), `|${widths.map((width) => '-'.repeat(width + 2)).join('|')}|`, ...cells.map(line)].join('\n');
}

export const int = (value: number): string => Math.round(value).toLocaleString('en-US');
export const ms = (value: number): string => (value >= 100 ? `${Math.round(value)} ms` : `${value.toFixed(value >= 10 ? 1 : 2)} ms`);
export const verdict = (ok: boolean): Verdict => (ok ? 'PASS' : 'FAIL');

/** Replaces the text between `<!-- bench:start -->` and `<!-- bench:end -->`; false when the markers are absent. */
export function replaceBetweenMarkers(text: string, content: string): string | undefined {
  const start = text.indexOf('<!-- bench:start -->');
  const end = text.indexOf('<!-- bench:end -->');
  if (start === -1 || end === -1 || end < start) return undefined;
  return `${text.slice(0, start + '<!-- bench:start -->'.length)}\n${content}\n${text.slice(end)}`;
}
