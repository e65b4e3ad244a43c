/** Display formats shared by the server-rendered pages and the islands. */

/** A byte count for people: "512 B", "1.5 KB", "2.3 MB". */
export function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
  return `${(bytes / (1024 * 1024)).toFixed(1)} MB`;
}

/** An ISO time as "2026-11-28 18:09 UTC": the server does not know the reader's time zone. */
export function formatUtc(iso: string | null): string {
  if (!iso) return "never";
  return `${iso.slice(0, 10)} ${iso.slice(11, 16)} UTC`;
}

/** A whole number with thousands separators: "12,345". */
export function formatCount(n: number): string {
  return n.toLocaleString("en");
}

/**
 * Dollars with a $ and 2 decimals ("$1,234.50"), or 4 under a cent ("$0.0003"): Pro's price is
 * a hundredth of a cent, and a small bill rounded to "$0.00" would read as free.
 */
export function formatUsd(amount: number): string {
  const rounded = Math.round(amount * 10_000) / 10_000;
  const digits = rounded > 0 && rounded < 0.01 ? 4 : 2;
  return "$" + rounded.toLocaleString("en", {
    minimumFractionDigits: digits,
    maximumFractionDigits: digits,
  });
}

/** A "YYYY-MM" month for people: "November 2026". */
export function formatMonth(month: string): string {
  return new Date(`${month}-01T00:00:00Z`).toLocaleString("en", {
    month: "long",
    year: "numeric",
    timeZone: "UTC",
  });
}

/** A "YYYY-MM-DD" day for people: "Nov 5". */
export function formatDay(day: string): string {
  return new Date(`${day}T00:00:00Z`).toLocaleString("en", {
    month: "short",
    day: "numeric",
    timeZone: "UTC",
  });
}
