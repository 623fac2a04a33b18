/** Every sample kept (float ms), so percentiles are exact rather than bucketed to whole milliseconds. */
export class LatencyRecorder {
  private chunks: Float64Array[] = [];
  private current = new Float64Array(65_536);
  private used = 0;

  record(ms: number): void {
    if (this.used === this.current.length) {
      this.chunks.push(this.current);
      this.current = new Float64Array(65_536);
      this.used = 0;
    }
    this.current[this.used++] = ms;
  }

  get count(): number {
    return this.chunks.length * 65_536 + this.used;
  }

  summary(): LatencySummary {
    const all = new Float64Array(this.count);
    let offset = 0;
    for (const chunk of this.chunks) {
      all.set(chunk, offset);
      offset += chunk.length;
    }
    all.set(this.current.subarray(0, this.used), offset);
    return summarise(all);
  }
}

export interface LatencySummary {
  count: number;
  mean: number;
  p50: number;
  p95: number;
  p99: number;
  max: number;
}

/** Nearest-rank percentiles of `samples` (sorted in place). */
export function summarise(samples: Float64Array | number[]): LatencySummary {
  const sorted = samples instanceof Float64Array ? samples.sort() : Float64Array.from(samples).sort();
  const at = (p: number) =>
    sorted.length === 0 ? Number.NaN : sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
  let sum = 0;
  for (const value of sorted) sum += value;
  return {
    count: sorted.length,
    mean: sorted.length === 0 ? Number.NaN : sum / sorted.length,
    p50: at(50),
    p95: at(95),
    p99: at(99),
    max: sorted.length === 0 ? Number.NaN : sorted[sorted.length - 1]!,
  };
}
