/**
 * Where a function's time goes: summarises V8 CPU profiles written by `npm run bench -- --cpu-prof DIR`.
 *
 *   node --import tsx scripts/bench/profile.ts DIR/ingest-1234.cpuprofile [--top 30] [--focus name,name]
 *
 * Prints self time per function (name and bundle position) and the inclusive time of every function
 * whose name matches `--focus` (time spent in it and everything it calls).
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number; columnNumber: number };
  hitCount?: number;
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

const frameName = (node: ProfileNode) => {
  const { functionName, url, lineNumber, columnNumber } = node.callFrame;
  const file = url.split('/').slice(-2).join('/');
  return `${functionName || '(anonymous)'} ${file ? `${file}:${lineNumber + 1}:${columnNumber + 1}` : ''}`.trim();
};

function summarise(profile: CpuProfile, top: number, focus: string[]): string {
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const parent = new Map<number, number>();
  for (const node of profile.nodes) for (const child of node.children ?? []) parent.set(child, node.id);
  const selfUs = new Map<number, number>();
  profile.samples.forEach((id, index) => selfUs.set(id, (selfUs.get(id) ?? 0) + (profile.timeDeltas[index] ?? 0)));
  const totalUs = profile.endTime - profile.startTime;
  const idle = [...selfUs].filter(([id]) => byId.get(id)!.callFrame.functionName === '(idle)').reduce((sum, [, us]) => sum + us, 0);
  const busy = totalUs - idle;

  const selfByName = new Map<string, number>();
  for (const [id, us] of selfUs) selfByName.set(frameName(byId.get(id)!), (selfByName.get(frameName(byId.get(id)!)) ?? 0) + us);
  const pct = (us: number) => `${((us / busy) * 100).toFixed(1).padStart(5)}%`;
  const lines = [
    `profile: ${(totalUs / 1e6).toFixed(1)} s, busy ${(busy / 1e6).toFixed(1)} s (${((busy / totalUs) * 100).toFixed(0)}%)`,
    '',
    'self time (share of busy time):',
  ];
  for (const [name, us] of [...selfByName].sort((a, b) => b[1] - a[1]).slice(0, top)) {
    if (name.startsWith('(idle)')) continue;
    lines.push(`  ${pct(us)}  ${name}`);
  }
  if (focus.length > 0) {
    lines.push('', 'inclusive time:');
    for (const name of focus) {
      let us = 0;
      for (const [id, self] of selfUs) {
        // Counted once per sample even when the function recurses.
        for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
          if (byId.get(at)!.callFrame.functionName === name) {
            us += self;
            break;
          }
        }
      }
      lines.push(`  ${pct(us)}  ${name}`);
    }
  }
  return lines.join('\n');
}

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { top: { type: 'string', default: '30' }, focus: { type: 'string', default: '' } },
});
for (const file of positionals) {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  process.stdout.write(`${file}\n${summarise(profile, Number(values.top), values.focus.split(',').filter(Boolean))}\n\n`);
}
