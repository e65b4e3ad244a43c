/**
 * Endpoints: the unique URLs senders post to. A slug carries 128 bits of randomness so URLs
 * cannot be guessed; rotating replaces it and the old slug answers 404 at once.
 */
import { randomSecret } from "../accounts/secrets.ts";
import { listAll } from "../store/kv.ts";
import {
  endpointBySlugKey,
  endpointKey,
  endpointsOfUserPrefix,
  mayNameRecord,
} from "../store/kv_keys.ts";
import { HttpError } from "../http/http_error.ts";
import type { Broker } from "../fanout/broker.ts";
import type { PublicEndpoint } from "../shared/wire.ts";
import { endpointUrl, type UrlConfig } from "./urls.ts";
import { openSecret, sealSecret } from "../accounts/secret_box.ts";
import type { Provider } from "../intake/signatures.ts";
import { log } from "../observe/log.ts";

/** A stored endpoint. */
export interface Endpoint {
  id: string;
  userId: string;
  slug: string;
  name: string;
  createdAt: string;
  /** Respond mode: the sender waits for a connected client's answer (absent: off). */
  respond?: boolean;
  /** How long a sender waits in respond mode before 504. */
  respondTimeoutMs?: number;
  /** Whose signatures webhooks carry; each is checked and its verdict added to the envelope. */
  provider?: Provider | null;
  /** The signing secret, sealed (secret_box.ts); never shown again once set. */
  secret?: string | null;
  /** The signing secret's last 4 characters, all the API ever shows of it. */
  secretLast4?: string | null;
  /** The secret before the last change, sealed: still valid until `previousUntil` (epoch ms). */
  previousSecret?: string | null;
  previousUntil?: number | null;
  /** The token a provider's URL handshake must present (Meta's hub.verify_token), sealed. */
  verifyToken?: string | null;
  /** A webhook whose signature does not verify is refused (401) rather than marked. */
  enforce?: boolean;
}

/** How long a replaced signing secret stays valid, as providers' own rotations allow. */
export const PREVIOUS_SECRET_MS = 24 * 3600_000;

/** Provider settings as PATCH /api/endpoints/:slug takes them; absent fields stay as they are. */
export interface ProviderSettings {
  /** null removes the provider with its secrets and enforcement. */
  provider?: Provider | null;
  secret?: string;
  /** null removes the verify token. */
  verifyToken?: string | null;
  enforce?: boolean;
}

/** Respond mode's default and longest wait. */
export const RESPOND_TIMEOUT = { defaultMs: 10_000, maxMs: 30_000 } as const;

/** An endpoint as every API response shows it: its URL, its settings, not its owner's id. */
export function publicEndpoint(config: UrlConfig, endpoint: Endpoint): PublicEndpoint {
  return {
    id: endpoint.id,
    slug: endpoint.slug,
    name: endpoint.name,
    createdAt: endpoint.createdAt,
    url: endpointUrl(config, endpoint.slug),
    respond: endpoint.respond ?? false,
    respondTimeoutSeconds: (endpoint.respondTimeoutMs ?? RESPOND_TIMEOUT.defaultMs) / 1000,
    provider: endpoint.provider ?? null,
    secretLast4: endpoint.secretLast4 ?? null,
    verifyTokenSet: Boolean(endpoint.verifyToken),
    enforce: endpoint.enforce ?? false,
  };
}

/**
 * The endpoint's provider settings applied to its record: secrets sealed, a replaced secret kept
 * as the previous one for PREVIOUS_SECRET_MS.
 */
export async function applyProviderSettings(
  endpoint: Endpoint,
  options: { settings: ProviderSettings; key: CryptoKey; now: number },
): Promise<Endpoint> {
  const { settings, key, now } = options;
  if (settings.provider === null) {
    return {
      ...endpoint,
      provider: null,
      secret: null,
      secretLast4: null,
      previousSecret: null,
      previousUntil: null,
      verifyToken: null,
      enforce: false,
    };
  }
  const next: Endpoint = { ...endpoint };
  if (settings.provider !== undefined) next.provider = settings.provider;
  if (settings.enforce !== undefined) next.enforce = settings.enforce;
  if (settings.verifyToken !== undefined) {
    next.verifyToken = settings.verifyToken === null
      ? null
      : await sealSecret(key, settings.verifyToken);
  }
  if (settings.secret !== undefined) {
    if (endpoint.secret) {
      next.previousSecret = endpoint.secret;
      next.previousUntil = now + PREVIOUS_SECRET_MS;
    }
    next.secret = await sealSecret(key, settings.secret);
    next.secretLast4 = settings.secret.slice(-4);
  }
  return next;
}

/** An endpoint's provider with its secrets opened: the current one first, then the previous. */
export interface EndpointCheck {
  provider: Provider;
  secrets: string[];
  verifyToken: string | null;
  enforce: boolean;
}

/**
 * A sealed secret opened, or null when there is none or it cannot be opened (sealed under
 * another SECRETS_KEY): the check then fails like a missing secret instead of failing ingest.
 */
async function openSealed(key: CryptoKey, sealed: string | null | undefined) {
  if (!sealed) return null;
  try {
    return await openSecret(key, sealed);
  } catch {
    log.warn("an endpoint's secret cannot be opened: was SECRETS_KEY changed?");
    return null;
  }
}

/** What ingest checks webhooks to this endpoint against, or null when it names no provider. */
export async function endpointCheck(
  endpoint: Endpoint,
  options: { key: CryptoKey; now: number },
): Promise<EndpointCheck | null> {
  if (!endpoint.provider) return null;
  const secrets: string[] = [];
  const current = await openSealed(options.key, endpoint.secret);
  if (current !== null) secrets.push(current);
  if ((endpoint.previousUntil ?? 0) > options.now) {
    const previous = await openSealed(options.key, endpoint.previousSecret);
    if (previous !== null) secrets.push(previous);
  }
  return {
    provider: endpoint.provider,
    secrets,
    verifyToken: await openSealed(options.key, endpoint.verifyToken),
    enforce: endpoint.enforce ?? false,
  };
}

/** The slug index entry: ids only. */
interface SlugIndex {
  userId: string;
  endpointId: string;
}

const MAX_ENDPOINTS_PER_USER = 100;

/** 16 random bytes → 22 URL-safe characters. */
export function newSlug(): string {
  return randomSecret(16);
}

/** Builds a new endpoint record. */
export function newEndpoint(userId: string, name: string): Endpoint {
  return {
    id: crypto.randomUUID(),
    userId,
    slug: newSlug(),
    name,
    createdAt: new Date().toISOString(),
  };
}

/** Adds the endpoint and its slug index to an atomic operation. */
export function writeEndpoint(op: Deno.AtomicOperation, endpoint: Endpoint): Deno.AtomicOperation {
  return op
    .check({ key: endpointBySlugKey(endpoint.slug), versionstamp: null })
    .set(endpointKey(endpoint.userId, endpoint.id), endpoint)
    .set(endpointBySlugKey(endpoint.slug), { userId: endpoint.userId, endpointId: endpoint.id });
}

/** Lists a user's endpoints, oldest first. */
export async function listEndpoints(kv: Deno.Kv, userId: string): Promise<Endpoint[]> {
  const entries = await listAll<Endpoint>(kv, { prefix: endpointsOfUserPrefix(userId) });
  return entries.map((e) => e.value).sort((a, b) => a.createdAt.localeCompare(b.createdAt));
}

/** Creates a named endpoint for a user. */
export async function createEndpoint(
  kv: Deno.Kv,
  options: { userId: string; name: string },
): Promise<Endpoint> {
  const existing = await listEndpoints(kv, options.userId);
  if (existing.length >= MAX_ENDPOINTS_PER_USER) {
    throw new HttpError(
      409,
      `Cannot create endpoint: the limit is ${MAX_ENDPOINTS_PER_USER} endpoints per account`,
    );
  }
  const endpoint = newEndpoint(options.userId, options.name);
  const result = await writeEndpoint(kv.atomic(), endpoint).commit();
  if (!result.ok) throw new Error("Cannot create endpoint: commit conflicted");
  return endpoint;
}

/** The endpoint a slug names, or null. */
export async function findEndpointBySlug(kv: Deno.Kv, slug: string): Promise<Endpoint | null> {
  if (!mayNameRecord(slug)) return null;
  const index = await kv.get<SlugIndex>(endpointBySlugKey(slug));
  if (!index.value) return null;
  const entry = await kv.get<Endpoint>(endpointKey(index.value.userId, index.value.endpointId));
  return entry.value;
}

/**
 * The one ownership check: the user's endpoint a slug names, as its KV entry. Anyone else's
 * endpoint or an unknown slug is the same 404, "Cannot <action>: no endpoint <slug>", so a
 * stranger learns nothing about slugs that exist.
 */
export async function ownedEndpointEntry(
  kv: Deno.Kv,
  options: { userId: string; slug: string; action: string },
): Promise<Deno.KvEntry<Endpoint>> {
  const index = mayNameRecord(options.slug)
    ? await kv.get<SlugIndex>(endpointBySlugKey(options.slug))
    : null;
  if (index?.value?.userId === options.userId) {
    const entry = await kv.get<Endpoint>(endpointKey(options.userId, index.value.endpointId));
    if (entry.value) return entry as Deno.KvEntry<Endpoint>;
  }
  // The slug is the caller's input: echo only a bounded piece of it.
  throw new HttpError(404, `Cannot ${options.action}: no endpoint ${options.slug.slice(0, 40)}`);
}

/** The user's endpoint a slug names; 404 for anyone else's or an unknown slug. */
export async function ownedEndpoint(
  kv: Deno.Kv,
  options: { userId: string; slug: string; action: string },
): Promise<Endpoint> {
  return (await ownedEndpointEntry(kv, options)).value;
}

/**
 * Replaces an endpoint's slug; the old slug stops resolving in the same commit, and every
 * endpoint cache the broker reaches forgets it.
 */
export async function rotateEndpoint(
  kv: Deno.Kv,
  options: { userId: string; slug: string; broker: Broker },
): Promise<{ endpoint: Endpoint; oldSlug: string }> {
  const entry = await ownedEndpointEntry(kv, { ...options, action: "rotate endpoint" });
  const endpoint = { ...entry.value, slug: newSlug() };
  const result = await writeEndpoint(kv.atomic().check(entry), endpoint)
    .delete(endpointBySlugKey(options.slug))
    .commit();
  if (!result.ok) throw new HttpError(409, "Cannot rotate endpoint: it changed meanwhile, retry");
  options.broker.publish({ kind: "endpoint_changed", slug: options.slug });
  return { endpoint, oldSlug: options.slug };
}

/**
 * Changes an endpoint's settings (respond mode and its timeout, its provider and secrets);
 * caches forget the old ones.
 */
export async function updateEndpointSettings(
  kv: Deno.Kv,
  options: {
    userId: string;
    slug: string;
    broker: Broker;
    settings: { respond?: boolean; respondTimeoutMs?: number };
    provider?: ProviderSettings;
    /** Seals secrets; needed when `provider` sets one. */
    key?: CryptoKey;
    now?: number;
  },
): Promise<Endpoint> {
  for (;;) {
    const entry = await ownedEndpointEntry(kv, { ...options, action: "update endpoint" });
    let endpoint = { ...entry.value, ...options.settings };
    if (options.provider && options.key) {
      endpoint = await applyProviderSettings(endpoint, {
        settings: options.provider,
        key: options.key,
        now: options.now ?? Date.now(),
      });
    }
    if ((await kv.atomic().check(entry).set(entry.key, endpoint).commit()).ok) {
      options.broker.publish({ kind: "endpoint_changed", slug: options.slug });
      return endpoint;
    }
  }
}

/** Deletes an endpoint and its slug, and makes every endpoint cache forget the slug. */
export async function deleteEndpoint(
  kv: Deno.Kv,
  options: { userId: string; slug: string; broker: Broker },
): Promise<Endpoint> {
  const entry = await ownedEndpointEntry(kv, { ...options, action: "delete endpoint" });
  await kv.atomic().check(entry).delete(entry.key).delete(endpointBySlugKey(options.slug)).commit();
  options.broker.publish({ kind: "endpoint_changed", slug: options.slug });
  return entry.value;
}

/** A short-lived in-memory slug → endpoint map that keeps KV reads off the ingest hot path. */
export interface EndpointCache {
  get(slug: string): Promise<Endpoint | null>;
  /** Drops a slug at once, as rotate and delete must. */
  invalidate(slug: string): void;
}

/** Creates an endpoint cache; unknown slugs are remembered briefly too, so floods stay cheap. */
export function createEndpointCache(
  kv: Deno.Kv,
  options: { ttlMs?: number; maxEntries?: number } = {},
): EndpointCache {
  const ttlMs = options.ttlMs ?? 10_000;
  const maxEntries = options.maxEntries ?? 50_000;
  const entries = new Map<string, { endpoint: Endpoint | null; expiresAt: number }>();
  return {
    async get(slug) {
      // Not cached: a stranger's long slugs would fill the cache with their own bytes.
      if (!mayNameRecord(slug)) return null;
      const now = Date.now();
      const hit = entries.get(slug);
      if (hit && hit.expiresAt > now) return hit.endpoint;
      const endpoint = await findEndpointBySlug(kv, slug);
      if (entries.size >= maxEntries) entries.clear();
      entries.set(slug, { endpoint, expiresAt: now + (endpoint ? ttlMs : ttlMs / 10) });
      return endpoint;
    },
    invalidate(slug) {
      entries.delete(slug);
    },
  };
}
