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

/**
 * A chart is drawn for the width it is shown at, so its text stays one size: `wide` from 48rem of
 * viewport (at least 728 CSS px for 720 units), `narrow` below (320 units in 296 px or more on a
 * 320 px phone). Font sizes are in chart units; with these the text is 11 CSS px or more.
 */
export const CHART_SIZES = {
  wide: { width: 720, height: 240, fontSize: 11, left: 56 },
  narrow: { width: 320, height: 220, fontSize: 12, left: 44 },
} as const;
export type ChartSize = keyof typeof CHART_SIZES;

export interface Chart {
  size: ChartSize;
  width: number;
  height: number;
  fontSize: number;
  plot: { left: number; top: number; right: number; bottom: number };
  bars: ChartBar[];
  ticks: { y: number; value: bigint }[];
  /** y of the quota line, when a quota is drawn. */
  quotaY: number | undefined;
  /** The dotted forecast from the last bar to the end of the last slot. */
  projection: { x1: number; y1: number; x2: number; y2: number; value: bigint } | undefined;
  xLabels: { x: number; start: string }[];
}

export interface ChartOptions {
  size?: ChartSize;
  /** Draw the quota as a line; the scale then always includes it. */
  quota?: bigint;
  /** Slots on the x axis when the range runs past the last point (a whole period drawn so far). */
  slots?: number;
  /** Where the running total is heading by the end of the last slot; drawn dotted, on the scale. */
  projectTo?: bigint;
  /** Label every n-th bar on the x axis, per size. */
  labelEvery?: Partial<Record<ChartSize, number>>;
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

const max = (...values: bigint[]): bigint => values.reduce((a, b) => (b > a ? b : a), 0n);

export function barChart(points: readonly ChartPoint[], options: ChartOptions = {}): Chart {
  const size = options.size ?? 'wide';
  const { width, height, fontSize, left } = CHART_SIZES[size];
  const plot = { left, top: 12, right: width - 8, bottom: height - fontSize - 17 };
  const highest = max(...points.map((point) => point.tokens), options.quota ?? 0n, options.projectTo ?? 0n);
  // Four equal, round steps: the axis reads 2K, 4K, 6K, 8K rather than 1.3K, 2.5K, 3.8K.
  const top = niceCeiling((highest + 3n) / 4n) * 4n;
  const plotHeight = plot.bottom - plot.top;
  const yOf = (value: bigint): number => plot.bottom - (Number((value * 1_000_000n) / top) / 1_000_000) * plotHeight;
  const slots = Math.max(points.length, options.slots ?? 0, 1);
  const slot = (plot.right - plot.left) / slots;
  const gap = slot > 6 ? Math.min(2, slot * 0.2) : 0;
  const bars = points.map((point, index) => {
    const y = yOf(point.tokens);
    return {
      x: round(plot.left + index * slot + gap / 2),
      y: round(y),
      width: round(slot - gap),
      height: round(plot.bottom - y),
      start: point.start,
      tokens: point.tokens,
    };
  });
  const ticks = [0n, 1n, 2n, 3n, 4n].map((quarter) => ({ value: (top * quarter) / 4n, y: round(yOf((top * quarter) / 4n)) }));
  // Labels about five characters wide each, never closer than that: fewer of them on a narrow chart.
  const every = options.labelEvery?.[size] ?? Math.max(1, Math.ceil(slots / Math.floor((plot.right - plot.left) / (fontSize * 4))));
  const xLabels = points.flatMap((point, index) =>
    index % every === 0 ? [{ x: round(plot.left + index * slot + slot / 2), start: point.start }] : [],
  );
  const last = points.at(-1);
  const projection =
    options.projectTo !== undefined && last && points.length < slots
      ? {
          x1: round(plot.left + points.length * slot),
          y1: round(yOf(last.tokens)),
          x2: plot.right,
          y2: round(yOf(options.projectTo)),
          value: options.projectTo,
        }
      : undefined;
  return {
    size,
    width,
    height,
    fontSize,
    plot,
    bars,
    ticks,
    quotaY: options.quota === undefined ? undefined : round(yOf(options.quota)),
    projection,
    xLabels,
  };
}

const round = (value: number): number => Math.round(value * 10) / 10;
