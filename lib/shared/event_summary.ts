/** An event as history lists show it: GET /api/events and the dashboard's inspector. */
export interface EventSummary {
  id: string;
  endpoint: string;
  receivedAt: string;
  method: string;
  path: string;
  contentType: string | null;
  size: number;
}
