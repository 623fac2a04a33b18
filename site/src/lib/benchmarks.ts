export interface MarkdownTable {
  header: string[];
  rows: string[][];
}

const cells = (line: string): string[] =>
  line
    .trim()
    .replace(/^\|/, '')
    .replace(/\|$/, '')
    .split('|')
    .map((cell) => cell.trim().replace(/`|\*\*|__/g, ''));

/** The first pipe table in a Markdown document (the bench writes its results as one). */
export function firstTable(markdown: string): MarkdownTable | undefined {
  const lines = markdown.split(/\r?\n/);
  for (let index = 0; index + 1 < lines.length; index += 1) {
    const header = lines[index]!;
    const separator = lines[index + 1]!;
    if (!header.trim().startsWith('|') || !/^\s*\|?\s*:?-{3,}/.test(separator)) continue;
    const rows: string[][] = [];
    for (let row = index + 2; row < lines.length && lines[row]!.trim().startsWith('|'); row += 1) rows.push(cells(lines[row]!));
    return { header: cells(header), rows };
  }
  return undefined;
}
