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
