/**
 * The badges of an event: the provider's name for it (its `eventType`), whether its signature was checked against the endpoint's provider, and
 * whether it is a provider handshake the relay answered. The fields are optional in the envelope
 * (absent when no provider is set, and in events stored before they existed), so they are read
 * from an unknown value and anything malformed shows no badge rather than a wrong one.
 */

/** One badge: its kind (for styling and tests) and the words shown. */
export interface Badge {
  kind: "event" | "verified" | "failed" | "handshake";
  text: string;
}

/** The envelope's `verified` field as the server writes it. */
interface Verified {
  provider: string;
  ok: boolean;
  reason?: string;
}

function isVerified(value: unknown): value is Verified {
  if (typeof value !== "object" || value === null) return false;
  const v = value as Record<string, unknown>;
  return typeof v.provider === "string" && typeof v.ok === "boolean" &&
    (v.reason === undefined || typeof v.reason === "string");
}

/**
 * The badges of an envelope or event summary: its event type, then handshake, then the
 * signature's verdict; none when it carries none of them.
 */
export function eventBadges(event: unknown): Badge[] {
  if (typeof event !== "object" || event === null) return [];
  const fields = event as Record<string, unknown>;
  const badges: Badge[] = [];
  if (typeof fields.eventType === "string" && fields.eventType !== "") {
    badges.push({ kind: "event", text: fields.eventType });
  }
  if (isHandshake(event)) badges.push({ kind: "handshake", text: "handshake" });
  if (isVerified(fields.verified)) {
    const { provider, ok, reason } = fields.verified;
    badges.push(
      ok
        ? { kind: "verified", text: `verified ${provider}` }
        : { kind: "failed", text: `signature failed: ${reason || "no reason given"}` },
    );
  }
  return badges;
}

/** Whether an envelope or summary is a provider handshake (not counted against the quota). */
export function isHandshake(event: unknown): boolean {
  return typeof event === "object" && event !== null &&
    (event as Record<string, unknown>).handshake === true;
}
