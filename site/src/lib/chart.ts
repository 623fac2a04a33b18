/** Geometry for the server-rendered SVG bar charts; pure, so the numbers are unit-testable. */

export interface ChartPoint {
  start: string;
  tokens: bigint;
}

export interface ChartBar {
  x: number;
  y: number;
  width: number;
  height: number;
  start: string;
  tokens: bigint;
}

export interface Chart {
  width: number;
  height: number;
  plot: { left: number; top: number; right: number; bottom: number };
  bars: ChartBar[];
  ticks: { y: number; value: bigint }[];
  /** y of the quota line, when a quota is drawn. */
  quotaY: number | undefined;
  xLabels: { x: number; start: string }[];
}

export interface ChartOptions {
  width?: number;
  height?: number;
  /** Draw the quota as a line; the scale then always includes it. */
  quota?: bigint;
  /** Label every n-th bar on the x axis. */
  labelEvery?: number;
}

/** A round number ≥ value (1, 2, 2.5, 5 × 10^n) so axis ticks read well. */
export function niceCeiling(value: bigint): bigint {
  if (value <= 0n) return 1n;
  let magnitude = 1n;
  while (magnitude * 10n <= value) magnitude *= 10n;
  for (const step of [10n, 20n, 25n, 50n, 100n]) {
    const candidate = (magnitude * step) / 10n;
    if (candidate >= value && candidate > 0n) return candidate;
  }
  return magnitude * 10n;
}

/** Running totals: the daily chart shows the period filling up towards its quota. */
export function cumulative(points: readonly ChartPoint[]): ChartPoint[] {
  let total = 0n;
  return points.map((point) => ({ start: point.start, tokens: (total += point.tokens) }));
}

export function barChart(points: readonly ChartPoint[], options: ChartOptions = {}): Chart {
  const width = options.width ?? 720;
  const height = options.height ?? 240;
  const plot = { left: 56, top: 12, right: width - 8, bottom: height - 28 };
  const largest = points.reduce((max, point) => (point.tokens > max ? point.tokens : max), 0n);
  const highest = options.quota !== undefined && options.quota > largest ? options.quota : largest;
  // Four equal, round steps: the axis reads 2K, 4K, 6K, 8K rather than 1.3K, 2.5K, 3.8K.
  const top = niceCeiling((highest + 3n) / 4n) * 4n;
  const plotHeight = plot.bottom - plot.top;
  const yOf = (value: bigint): number => plot.bottom - (Number((value * 1_000_000n) / top) / 1_000_000) * plotHeight;
  const slot = (plot.right - plot.left) / Math.max(points.length, 1);
  const gap = slot > 6 ? Math.min(2, slot * 0.2) : 0;
  const bars = points.map((point, index) => {
    const y = yOf(point.tokens);
    return { x: round(plot.left + index * slot + gap / 2), y: round(y), width: round(slot - gap), height: round(plot.bottom - y), start: point.start, tokens: point.tokens };
  });
  const ticks = [0n, 1n, 2n, 3n, 4n].map((quarter) => ({ value: (top * quarter) / 4n, y: round(yOf((top * quarter) / 4n)) }));
  const every = options.labelEvery ?? Math.max(1, Math.ceil(points.length / 8));
  const xLabels = points.flatMap((point, index) => (index % every === 0 ? [{ x: round(plot.left + index * slot + slot / 2), start: point.start }] : []));
  return { width, height, plot, bars, ticks, quotaY: options.quota === undefined ? undefined : round(yOf(options.quota)), xLabels };
}

const round = (value: number): number => Math.round(value * 10) / 10;
