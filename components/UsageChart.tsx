/**
 * The daily usage chart: accepted and refused (402) webhooks per day of the month, drawn on the
 * server as SVG (no script, no inline style: colours come from classes in style.css). The x axis
 * spans the whole month so the bars keep their width as the month goes on; only the days so far
 * have a bar group.
 */
import { formatCount, formatDay, formatMonth } from "../lib/shared/format.ts";
import type { DailyUsage } from "../lib/billing/usage.ts";

/** Pixel height of the chart; its width follows the page. */
const HEIGHT = 220;
/** Room above the top grid line (its label) and below the baseline (the day labels). */
const TOP = 12;
const BOTTOM = 28;
const PLOT = HEIGHT - TOP - BOTTOM;
/** Share of a day's slot its bar fills. */
const BAR_SHARE = 0.64;

/** A y axis with round steps (1, 2, 2.5 or 5 times a power of ten): 0, step … top ≥ max. */
export function niceScale(max: number): { step: number; top: number } {
  // A month of zeros or single digits still gets a few steps rather than one huge bar.
  const value = Math.max(max, 4);
  for (let magnitude = 1;; magnitude *= 10) {
    const steps = magnitude === 1 ? [1, 2, 5] : [magnitude, 2 * magnitude, 2.5 * magnitude];
    for (const step of [...steps, 5 * magnitude]) {
      // At most five steps: enough lines to read a bar against, few enough to label.
      if (Math.ceil(value / step) <= 5) return { step, top: step * Math.ceil(value / step) };
    }
  }
}

/** Days in a "YYYY-MM" month. */
function daysInMonth(month: string): number {
  const [year, monthNumber] = month.split("-").map(Number);
  return new Date(Date.UTC(year, monthNumber, 0)).getUTCDate();
}

/**
 * Axis labels like "2.5K". Made on the first chart, not at import: the first Intl formatter
 * loads ICU data, a few ms of every cold start that no page before a chart needs.
 */
let compact: Intl.NumberFormat | null = null;
const compactNumber = (value: number) =>
  (compact ??= new Intl.NumberFormat("en", { notation: "compact", maximumFractionDigits: 2 }))
    .format(value);

/** A percentage for an SVG attribute, without float noise. */
function pct(value: number): string {
  return `${Number(value.toFixed(3))}%`;
}

/** The sentence a screen reader hears for the chart. */
function describe(month: string, daily: DailyUsage[]): string {
  const first = formatDay(`${month}-01`);
  const last = formatDay(daily.at(-1)?.day ?? `${month}-01`);
  const accepted = daily.reduce((sum, d) => sum + d.accepted, 0);
  const rejected = daily.reduce((sum, d) => sum + d.rejected, 0);
  if (accepted + rejected === 0) return `No webhooks from ${first} to ${last}.`;
  const busiest = daily.reduce((best, d) => (d.accepted > best.accepted ? d : best));
  return `From ${first} to ${last}: ${formatCount(accepted)} accepted and ` +
    `${formatCount(rejected)} refused. Busiest day: ${formatDay(busiest.day)}, with ` +
    `${formatCount(busiest.accepted)} accepted.`;
}

/** The chart, its legend, and the numbers as a table for anyone who wants them exactly. */
export function UsageChart(props: { month: string; daily: DailyUsage[] }) {
  const { month, daily } = props;
  const slots = daysInMonth(month);
  const slot = 100 / slots;
  const { step, top } = niceScale(Math.max(0, ...daily.map((d) => d.accepted + d.rejected)));
  const baseline = TOP + PLOT;
  const height = (count: number) => {
    // A day with any traffic stays visible next to a busy one.
    return count === 0 ? 0 : Math.max(1, (count / top) * PLOT);
  };
  const ticks: number[] = [];
  for (let value = 0; value <= top; value += step) ticks.push(value);
  const labelled = [1, 5, 10, 15, 20, 25, 30].filter((day) => day <= slots);
  const empty = daily.every((d) => d.accepted === 0 && d.rejected === 0);
  return (
    <div class="chart">
      <div class="chart-plot">
        <svg
          width="100%"
          height={HEIGHT}
          role="img"
          aria-labelledby="chart-title chart-desc"
          data-testid="usage-chart"
        >
          <title id="chart-title">Webhooks per day, {formatMonth(month)}</title>
          <desc id="chart-desc">{describe(month, daily)}</desc>
          <g class="grid">
            {ticks.map((value) => {
              const y = baseline - (value / top) * PLOT;
              return (
                <g key={value}>
                  <line x1="0" x2="100%" y1={y} y2={y} class={value === 0 ? "axis" : undefined} />
                  <text x={-8} y={y} class="y-label">{compactNumber(value)}</text>
                </g>
              );
            })}
          </g>
          <g class="bars">
            {daily.map((d, i) => {
              const accepted = height(d.accepted);
              const rejected = height(d.rejected);
              const x = pct(i * slot + (slot * (1 - BAR_SHARE)) / 2);
              const width = pct(slot * BAR_SHARE);
              return (
                <g
                  key={d.day}
                  class="day"
                  data-day={d.day}
                  data-accepted={d.accepted}
                  data-rejected={d.rejected}
                >
                  <title>
                    {formatDay(d.day)}: {formatCount(d.accepted)} accepted,{" "}
                    {formatCount(d.rejected)} refused
                  </title>
                  <rect
                    class="accepted"
                    x={x}
                    y={baseline - accepted}
                    width={width}
                    height={accepted}
                  />
                  <rect
                    class="rejected"
                    x={x}
                    y={baseline - accepted - rejected}
                    width={width}
                    height={rejected}
                  />
                </g>
              );
            })}
          </g>
          <g class="x-labels">
            {labelled.map((day) => (
              <text key={day} x={pct((day - 0.5) * slot)} y={HEIGHT - 8} class="x-label">
                {day === 1 ? formatDay(`${month}-01`) : day}
              </text>
            ))}
          </g>
          {empty
            ? (
              <text x="50%" y={TOP + PLOT / 2} class="chart-empty">
                No webhooks yet this month
              </text>
            )
            : null}
        </svg>
      </div>
      {/* The colours' key, for eyes; the chart's description and the table carry the numbers. */}
      <p class="legend" aria-hidden="true">
        <span class="key accepted">Accepted</span>
        <span class="key rejected">Refused (402, over the limit)</span>
      </p>
      <details class="chart-numbers">
        <summary>Numbers per day</summary>
        <div class="table-wrap">
          <table>
            <thead>
              <tr>
                <th scope="col">Day</th>
                <th scope="col" class="num">Accepted</th>
                <th scope="col" class="num">Refused</th>
              </tr>
            </thead>
            <tbody>
              {daily.map((d) => (
                <tr key={d.day}>
                  <th scope="row">{formatDay(d.day)}</th>
                  <td class="num">{formatCount(d.accepted)}</td>
                  <td class="num">{formatCount(d.rejected)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      </details>
    </div>
  );
}
