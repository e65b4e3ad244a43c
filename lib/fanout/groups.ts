/**
 * Consumer groups: `group=<name>` on a stream makes the connection a member, and every event
 * (after its filter) goes to exactly one member, each holding at most one unacked event.
 *
 * Exclusivity comes from atomic KV claims, never from a leader: `["group_claim", user, name, id]`
 * is written only where it is absent, or released (`until` 0) or expired and not acked, so of
 * all the isolates and instances sharing the store exactly one member holds each attempt. The
 * group's record holds `cursor`: every id at or below it is done (acked, or matched by no member
 * when it was seen), but those in its `open` list, events members held when the cursor passed
 * them (each scan looks at them again: `settleOpen`). Progress survives restarts and the absence
 * of every member.
 *
 * Each isolate runs a dispatcher per (user, group) while it has members of that group. It keeps
 * candidate events in id order (bounded: `MAX_PENDING`), from two sources: a scan of the log
 * after the cursor when it starts and every `TICK_MS` (which also finds claims released or
 * expired elsewhere, and advances the cursor over done events, deleting their claims in the same
 * commit), and live `events` messages from the broker. Candidates go, oldest first, to the next
 * idle local member round-robin whose filter matches, once the claim is won; a lost claim means
 * another isolate holds it. An event not acked within the member's `ackTimeoutMs`, or whose member
 * leaves, is released and goes to another member with `attempt` + 1: at least once, in order
 * for each member, up to `maxAttempts` deliveries (GROUP_MAX_ATTEMPTS) or the event's expiry,
 * after which the group gives the event up as done.
 *
 * Members' filters may differ. An event no member matches is done when a scan reaches it
 * unclaimed; "no member" includes other isolates' members, whose filters each dispatcher
 * publishes in `["group_member", user, name, origin]` (rewritten when they change and every
 * `MEMBERS_REFRESH_MS`, trusted for `MEMBERS_VALID_MS`), so an event only a member elsewhere
 * takes waits for it rather than being passed over.
 */
import type { Broker } from "./broker.ts";
import { CLOSE, type Connection, type Connections } from "./connections.ts";
import { compileFilter, describeFilter, type Filter, type FilterSpec, matches } from "./filters.ts";
import { type EventMatch, eventsAfter, getEvent, hasEvent } from "../log/events.ts";
import { type EventFacts, heldChars, type LiveEvent, withAttempt } from "../log/envelope_json.ts";
import { HttpError } from "../http/http_error.ts";
import {
  eventHeadKey,
  groupClaimKey,
  groupClaimsPrefix,
  groupKey,
  groupMembersKey,
  groupMembersPrefix,
  groupNamesKey,
  groupsOfUserPrefix,
} from "../store/kv_keys.ts";
import { log } from "../observe/log.ts";
import { counters } from "../observe/metrics.ts";
import { idTime } from "../store/ids.ts";
import type { ClientInfo, GroupSummary } from "../shared/wire.ts";

/** What a group's name may be. */
export const GROUP_NAME = /^[A-Za-z0-9_.-]{1,64}$/;
/** Groups one account may have. */
export const MAX_GROUPS_PER_USER = 20;
/** Seconds a member has to ack an event, unless it asks otherwise, and the bounds it may ask. */
export const ACK_TIMEOUT_SECONDS = { default: 30, min: 1, max: 3600 } as const;
/** `lag` in GET /api/groups is counted up to this many events. */
export const LAG_CAP = 10_000;

/** ["group", userId, name] */
export interface GroupRecord {
  name: string;
  /** Every event id at or below it is done for the group, but those in `open`; null: none yet. */
  cursor: string | null;
  /**
   * Events at or below the cursor not done yet: the cursor passed them while a member held them,
   * so one event that is never acked does not hold it back (at most MAX_OPEN).
   */
  open?: string[];
  createdAt: string;
  /** Epoch ms of the last write. */
  updatedAt: number;
}

/** ["group_member", userId, name, origin]: what one isolate's members of a group take. */
export interface GroupMembers {
  /** Each member's filter (`[]` everywhere: everything), with its token's endpoint limit. */
  filters: MemberFilter[];
  /** Epoch ms until which the record holds; the isolate rewrites it before. */
  until: number;
}

/**
 * A member's filter as other isolates read it: the spec, and the ids of its token's endpoints
 * when the token is limited (absent: no limit, as in records written before it was published).
 */
export type MemberFilter = FilterSpec & { endpointIds?: string[] };

/** ["group_claim", userId, name, eventId]: one delivery attempt of one event. */
export interface GroupClaim {
  /** The member's connection id. */
  member: string;
  /** The isolate that holds the member (the broker's origin). */
  origin: string;
  attempt: number;
  /** Epoch ms after which another member may take the event; 0 once released. */
  until: number;
  /** Done: acked by its member, or given up (`gaveUp`). */
  acked: boolean;
  /** Sent `maxAttempts` times without an ack, or expired unacked: done without one. */
  gaveUp?: boolean;
}

/** One group as GET /api/groups describes it (its one definition is lib/shared/wire.ts). */
export type { GroupSummary };

/** A group's summary before its members are added: what countGroups shares. */
type GroupCounts = Omit<GroupSummary, "members">;

/** The consumer groups of one isolate. */
export interface Groups {
  /**
   * Makes sure the group exists before a member joins: 400 for a bad name, 409 when the account
   * already has MAX_GROUPS_PER_USER others. Joining itself happens when the connection opens.
   */
  prepare(userId: string, name: string): Promise<void>;
  /**
   * Acks `eventId` for member `connectionId` of the group: 409 when that member does not hold
   * it (another member's, never sent, acked already, another account's).
   */
  ack(options: {
    userId: string;
    name: string;
    connectionId: string;
    eventId: string;
    /** The caller's endpoint limit (auth.ts `seesEvent`): 404 for an event outside it. */
    sees?: EventMatch;
  }): Promise<void>;
  /**
   * Deletes a group with its claims and progress: 404 when there is none, 409 while `clients`
   * (presence, every isolate) has members of it.
   */
  remove(userId: string, name: string, clients: () => Promise<ClientInfo[]>): Promise<void>;
  /**
   * The user's groups, with members taken from `clients` (presence, every isolate), which is
   * asked only when there is a group.
   */
  describe(userId: string, clients: () => Promise<ClientInfo[]>): Promise<GroupSummary[]>;
  /** Characters of envelopes this isolate holds for the account's groups (about its memory). */
  held(userId: string): number;
  /** Stops the dispatchers, once the releases of members that left are written. */
  stop(): Promise<void>;
}

/** How often a dispatcher scans the log and its claims. */
const TICK_MS = 1000;
/**
 * Most ticks between scans that make no progress. A scan walks up to MAX_WALK events after
 * the cursor; one event that never gets acked (a member that takes it and goes quiet, each ack
 * timeout) holds the cursor, and every tick walked the same thousands of events again, for
 * good. Scans that find nothing new wait 2, 4, 8 ticks; a join, a leave, an ack, and live
 * events left for the scan wake it at once. Live events do not wait: they are held as they are
 * published. Under MEMBERS_REFRESH_MS: a scan rewrites this isolate's members' record, which
 * other isolates stop counting after MEMBERS_VALID_MS, and then pass events only these members
 * take; and events released on another isolate wait for a scan here.
 */
const MAX_IDLE_TICKS = 8;
/**
 * Candidate events a dispatcher holds, and characters of their envelopes (one event is held
 * whatever its size); the log keeps the rest for later scans.
 */
const MAX_PENDING = 200;
const MAX_PENDING_CHARS = 2 * 1024 * 1024;
/**
 * Characters all of an account's dispatchers in an isolate hold together. Events a scan reads
 * are each dispatcher's own copies: twenty groups whose members take nothing held 40 MiB for
 * one free account. A dispatcher holding nothing may still take one, so no group of the
 * account waits on another's members.
 */
const ACCOUNT_PENDING_CHARS = 4 * 1024 * 1024;
/** Claims and events GET /api/groups reads to count unacked and lag, over all of the user's groups. */
const LAG_BUDGET = 2 * LAG_CAP;
/**
 * Bytes of the log one count of lag reads (packs are read whole, bodies and all); past it the
 * lag shows as capped. 20,000 events of 45 KB were 850 MB a request.
 */
const LAG_BYTES = 16 * 1024 * 1024;
/** Thrown by a count of lag that read LAG_BYTES: it ends the read. */
const STOP_COUNTING = new Error("the count of lag read its bytes");
/** How long one count of an account's groups answers GET /api/groups (see countGroups). */
const COUNTS_FRESH_MS = 2000;
/** Accounts whose counts are kept at once; past it, stale ones are dropped. */
const MAX_COUNTED_USERS = 1000;
/** How often an isolate rewrites its members' record at least, and how long one holds. */
const MEMBERS_REFRESH_MS = 10_000;
const MEMBERS_VALID_MS = 30_000;
/** Bytes of one isolate's members' filters as KV stores them, well under its 64 KiB value. */
const MAX_MEMBERS_BYTES = 48 * 1024;
/** How long stopping waits for the claims and releases being written. */
const STOP_WAIT_MS = 2000;
/**
 * Events held by members that the cursor may pass and keep in the record's `open` list. Beyond
 * them the cursor waits, as before: one event held a whole hour (its ack timeout) stopped the
 * group once 5,000 acked events piled up behind it, and every scan walked them all again.
 */
const MAX_OPEN = 64;
/** Events one scan walks past the cursor. */
const MAX_WALK = 5000;
/**
 * Claims one commit deletes as the cursor passes their events, and absent claims it checks:
 * under KV's 1,000 mutations, 100 checks and 80 KiB of keys per commit (a claim's key with a
 * 64-character name is some 150 bytes). A scan that passes more commits several times.
 */
const MAX_ADVANCE_DELETES = 250;
const MAX_ADVANCE_CHECKS = 90;
/** Claims one commit writes for idle members: each checks its key, under KV's 100 checks. */
const MAX_CLAIMS_PER_COMMIT = 50;

/**
 * At most what KV's serializer stores for the strings in `json`: one byte a character, or two
 * for a string with a character past U+00FF ("€" is two bytes there, not one JSON character).
 */
function storedBytes(json: string): number {
  for (let i = 0; i < json.length; i++) {
    if (json.charCodeAt(i) > 0xff) return 2 * json.length;
  }
  return json.length;
}

/** The record with `open` as its open list (none when empty). */
function withOpen(record: GroupRecord, open: readonly string[]): GroupRecord {
  const { open: _, ...rest } = record;
  return open.length > 0 ? { ...rest, open: [...open] } : rest;
}

/** Whether the group is done with `id`: at or below its cursor, and not open. */
function passed(record: GroupRecord | null | undefined, id: string): boolean {
  return !!record && record.cursor !== null && id <= record.cursor &&
    !(record.open?.includes(id) ?? false);
}

/**
 * One done event at the head of a group's log: acked (its claim goes) or taken by no member;
 * `released` is the versionstamp of a released claim that no member takes now, which goes if
 * it is unchanged.
 */
export interface DoneEvent {
  id: string;
  acked: boolean;
  released?: string;
  /** Held by a member: passed into the record's `open` list, its claim kept and unchecked. */
  held?: boolean;
}

/** One commit of a cursor's advance: where the cursor goes, the claims it deletes, and checks. */
export interface AdvanceStep {
  cursor: string;
  deletes: string[];
  /**
   * Ids whose claim must still be absent (null) or unchanged (its versionstamp): no member
   * elsewhere took the event meanwhile.
   */
  checks: { id: string; versionstamp: string | null }[];
  /** Ids it passes while members hold them, for the record's `open` list. */
  held?: string[];
}

/**
 * Splits the leading run of done events into commits within KV's limits, in order, so the
 * cursor passes the whole run: at 500 acks a second a cursor that moved 250 events a scan fell
 * further behind every second, and every scan listed more claims.
 */
export function advanceSteps(
  run: readonly DoneEvent[],
  limits = { deletes: MAX_ADVANCE_DELETES, checks: MAX_ADVANCE_CHECKS },
): AdvanceStep[] {
  const steps: AdvanceStep[] = [];
  let step: AdvanceStep | null = null;
  for (const { id, acked, released, held } of run) {
    const deletes = !held && (acked || released !== undefined);
    const checks = !held && !acked;
    if (
      !step || (deletes && step.deletes.length >= limits.deletes) ||
      (checks && step.checks.length >= limits.checks)
    ) {
      step = { cursor: id, deletes: [], checks: [] };
      steps.push(step);
    }
    step.cursor = id;
    if (held) (step.held ??= []).push(id);
    if (deletes) step.deletes.push(id);
    if (checks) step.checks.push({ id, versionstamp: released ?? null });
  }
  return steps;
}

interface Candidate {
  event: LiveEvent;
  /** The member it was released from: another one is preferred. */
  avoid: string | null;
}

interface Dispatcher {
  userId: string;
  name: string;
  members: Connection[];
  /** Round-robin position in `members`. */
  next: number;
  /** The group record as last read or written. */
  group: Deno.KvEntryMaybe<GroupRecord> | null;
  /** Change only with `hold` and `drop`, which keep `pendingChars`. */
  pending: Map<string, Candidate>;
  pendingChars: number;
  /** Characters the running scan may still hold: counted as held, so scans side by side share. */
  reserved: number;
  /** Null: `pending` holds every candidate up to the log's end; else up to this id only. */
  horizon: string | null;
  /**
   * While a scan runs: the ids this isolate claimed since it listed the claims. The scan's walk
   * of the log would take them for unclaimed, and each would cost a claim that is lost.
   */
  claimedSince: Set<string> | null;
  /** The last scan found candidates: when they are sent, the next one runs at once. */
  found: boolean;
  /** Scans in a row that moved nothing on, and the ticks to skip before the next one. */
  idleScans: number;
  skipTicks: number;
  /** What the last scan found: found again, it is no progress (an event nobody acks). */
  lastFound: Set<string>;
  /** The first scan is done: nothing is sent before it, so older events go first. */
  ready: boolean;
  /** The scan running now, if any. */
  scanning: Promise<void> | null;
  rescan: boolean;
  pumping: boolean;
  repump: boolean;
  stopped: boolean;
  /** Stops its ticks. */
  stopTicks: () => void;
  /** Other isolates' members' filters, as last read (null: everything). */
  remote: (Filter | null)[];
  /** Our members' filters as last written, when, and the record's versionstamp. */
  written: { filters: string; at: number; versionstamp: string } | null;
  /** Per member: the event in flight (to hand on when released) and its ack timer. */
  held: Map<Connection, { event: LiveEvent; timer: ReturnType<typeof setTimeout> }>;
}

/** Creates the groups of an isolate and attaches them to its connections. */
export function createGroups(
  kv: Deno.Kv,
  options: {
    broker: Broker;
    connections: Connections;
    retentionMs: number;
    /** Deliveries of one event without an ack before the group gives it up (GROUP_MAX_ATTEMPTS). */
    maxAttempts: number;
    /**
     * Calls a dispatcher's `tick` every TICK_MS and returns its stop; `tick` returns the scan it
     * started, if any (tests tick by hand).
     */
    every?: (tick: () => Promise<void> | undefined) => () => void;
  },
): Groups {
  const { broker, connections } = options;
  const every = options.every ?? ((tick) => {
    const interval = setInterval(tick, TICK_MS);
    return () => clearInterval(interval);
  });
  /**
   * Claims expire with the events they are about. Group records do not: one that vanished
   * after a quiet spell would restart at the log's head and skip events still retained, so an
   * unused group is deleted on request instead (`remove`).
   */
  const expireIn = options.retentionMs;
  /** userId → group name → dispatcher. */
  const dispatchers = new Map<string, Map<string, Dispatcher>>();
  let stopped = false;
  /** Releases being written: shutting down waits for them, so the next start sends in order. */
  const releasing = new Set<Promise<void>>();
  /** Pump passes running: shutting down waits for them too (a claim may be being written). */
  const pumping = new Set<Promise<void>>();

  const report = (what: string) => (error: unknown) => {
    if (!stopped) log.error(`consumer groups: ${what} failed`, error);
  };

  /** Scans at the next tick again, after a change that may let the group move on. */
  function wake(d: Dispatcher): void {
    d.idleScans = 0;
    d.skipTicks = 0;
  }

  /** Holds a candidate (replacing one with the same id). */
  function hold(d: Dispatcher, id: string, candidate: Candidate): void {
    drop(d, id);
    d.pending.set(id, candidate);
    d.pendingChars += heldChars(candidate.event);
  }

  function drop(d: Dispatcher, id: string): void {
    const candidate = d.pending.get(id);
    if (!candidate) return;
    d.pending.delete(id);
    d.pendingChars -= heldChars(candidate.event);
  }

  /** Characters the account's dispatchers in this isolate hold. */
  function accountChars(userId: string): number {
    let chars = 0;
    for (const d of dispatchers.get(userId)?.values() ?? []) chars += d.pendingChars + d.reserved;
    return chars;
  }

  /** Characters the dispatcher may still take; one event whatever its size when it has none. */
  function roomChars(d: Dispatcher): number {
    const room = Math.min(
      MAX_PENDING_CHARS - d.pendingChars,
      ACCOUNT_PENDING_CHARS - accountChars(d.userId),
    );
    return d.pending.size === 0 ? Math.max(room, 1) : room;
  }

  /** Whether another candidate may be held. */
  const room = (d: Dispatcher) => d.pending.size < MAX_PENDING && roomChars(d) > 0;

  /** Whether a member here takes the event. */
  const localMatch = (d: Dispatcher, facts: EventFacts) =>
    d.members.some((member) => !member.closed && matches(member.filter, facts));
  /** Whether any member, here or on another isolate, takes the event. */
  const anyMatch = (d: Dispatcher, facts: EventFacts) =>
    localMatch(d, facts) || d.remote.some((filter) => matches(filter, facts));

  /**
   * Publishes this isolate's members' filters when they changed or are due, and reads the other
   * isolates' ones.
   */
  async function syncMembers(d: Dispatcher): Promise<void> {
    // The limit goes too: without it, a member limited to some endpoints would read, elsewhere,
    // as taking every event, and an event no member takes would wait for it for good.
    // Each distinct filter once: members of one token and query publish the same one.
    const distinct = new Map<string, MemberFilter>();
    for (const member of d.members) {
      if (member.closed) continue;
      const limit = member.filter?.limit;
      const spec = describeFilter(member.filter);
      const one: MemberFilter = limit ? { ...spec, endpointIds: [...limit.ids] } : spec;
      distinct.set(JSON.stringify(one), one);
    }
    let specs = [...distinct.values()];
    let filters = JSON.stringify(specs);
    // Over a KV value (many limited tokens): say "everything", which only makes the other
    // isolates wait for these members where they might have passed an event over.
    if (storedBytes(filters) > MAX_MEMBERS_BYTES) {
      specs = [describeFilter(null)];
      filters = JSON.stringify(specs);
    }
    const now = Date.now();
    if (d.written?.filters !== filters || now - d.written.at > MEMBERS_REFRESH_MS) {
      const record: GroupMembers = { filters: specs, until: now + MEMBERS_VALID_MS };
      const { versionstamp } = await kv.set(
        groupMembersKey(d.userId, d.name, broker.origin),
        record,
        { expireIn: 2 * MEMBERS_VALID_MS },
      );
      d.written = { filters, at: now, versionstamp };
    }
    const remote: (Filter | null)[] = [];
    for await (
      const entry of kv.list<GroupMembers>({ prefix: groupMembersPrefix(d.userId, d.name) })
    ) {
      if (entry.key[3] === broker.origin || entry.value.until <= now) continue;
      for (const { endpointIds, ...spec } of entry.value.filters) {
        // Matched by endpoint id only; slugs are what a client may name, checked where it joined.
        const limit = endpointIds ? { ids: new Set(endpointIds), slugs: new Set<string>() } : null;
        try {
          remote.push(compileFilter(spec, limit));
        } catch {
          // A record this version cannot read (another version's, or damaged): that member is
          // taken to want everything, so events wait for it rather than being passed over. A
          // throw here stopped every scan of the group.
          remote.push(null);
        }
      }
    }
    d.remote = remote;
  }

  /**
   * Creates the group record when absent; `cursor` is where a new group starts. The record and
   * the account's list of names are written in one commit that checks both, so joins side by
   * side cannot make more than MAX_GROUPS_PER_USER; over it, a 409.
   */
  async function ensureRecord(
    userId: string,
    name: string,
    options: { cursor?: string | null } = {},
  ): Promise<void> {
    const key = groupKey(userId, name);
    const namesKey = groupNamesKey(userId);
    for (;;) {
      const [entry, names] = await kv.getMany<[GroupRecord, string[]]>([key, namesKey]);
      if (entry.value) return;
      // Accounts whose groups predate the list: it starts from their records.
      const list = names.value ?? await recordNames(userId);
      const others = list.filter((one) => one !== name);
      if (others.length >= MAX_GROUPS_PER_USER) {
        throw new HttpError(
          409,
          `Cannot join group "${name}": this account already has ${MAX_GROUPS_PER_USER} ` +
            "consumer groups (the most it may have); join one of them, or delete an unused " +
            "one (DELETE /api/groups/<name>)",
        );
      }
      // A new group starts with what arrives from now on, not with the whole retained log.
      const cursor = options.cursor !== undefined
        ? options.cursor
        : (await kv.get<string>(eventHeadKey(userId))).value ?? null;
      const record: GroupRecord = {
        name,
        cursor,
        createdAt: new Date().toISOString(),
        updatedAt: Date.now(),
      };
      const created = await kv.atomic().check(entry, names)
        .set(key, record)
        .set(namesKey, [...others, name])
        .commit();
      if (created.ok) return;
      // Another join or removal of this account's groups came first: look again.
    }
  }

  /** The names of the account's group records (at most twice the limit). */
  async function recordNames(userId: string): Promise<string[]> {
    const names: string[] = [];
    for await (
      const entry of kv.list<GroupRecord>({ prefix: groupsOfUserPrefix(userId) }, {
        limit: MAX_GROUPS_PER_USER * 2,
      })
    ) names.push(entry.value.name);
    return names;
  }

  /** A claim of one delivery attempt by `member`, held for its ack timeout from `now`. */
  function newClaim(member: Connection, attempt: number, now: number): GroupClaim {
    return {
      member: member.id,
      origin: broker.origin,
      attempt,
      until: now + member.group!.ackTimeoutMs,
      acked: false,
    };
  }

  /**
   * Claims `id` for `member`: its attempt number, or null when the event is done or another
   * member holds it. Checks the group record too, so an event the cursor has passed (its claim
   * deleted) is never claimed anew.
   */
  async function claim(d: Dispatcher, member: Connection, id: string): Promise<number | null> {
    const key = groupClaimKey(d.userId, d.name, id);
    let group = d.group;
    let current: Deno.KvEntryMaybe<GroupClaim> | null = null;
    for (let tries = 0; tries < 3; tries++) {
      if (tries > 0 || group === null) {
        const [fresh, claimed] = await kv.getMany<[GroupRecord, GroupClaim]>([
          groupKey(d.userId, d.name),
          key,
        ]);
        group = d.group = fresh;
        current = claimed;
      }
      if (!group.value) return null;
      if (passed(group.value, id)) return null;
      // A member that never acks (or keeps leaving) is not sent the event for ever, nor past
      // its retention: the group gives it up, and the scan's cursor moves over it.
      const expired = idTime(id) + options.retentionMs <= Date.now();
      if (expired && current === null) current = await kv.get<GroupClaim>(key);
      const held = current?.value ?? null;
      if (held && (held.acked || held.until > Date.now())) return null;
      if (expired || (held && held.attempt >= options.maxAttempts)) {
        if (held) {
          await kv.atomic().check(current!)
            .set(key, { ...held, until: 0, acked: true, gaveUp: true }, { expireIn })
            .commit();
        }
        return null;
      }
      const attempt = (held?.attempt ?? 0) + 1;
      const value = newClaim(member, attempt, Date.now());
      const result = await kv.atomic()
        .check({ key: group.key, versionstamp: group.versionstamp })
        .check({ key, versionstamp: current?.versionstamp ?? null })
        .set(key, value, { expireIn })
        .commit();
      if (result.ok) return attempt;
      // The group moved on, or the claim changed: look at both again.
    }
    return null;
  }

  /**
   * Claims each event for its member (`claim`, in one commit when every one is new, unexpired
   * and past the cursor): each one's attempt number, or null as `claim` says.
   */
  async function claimAll(
    d: Dispatcher,
    batch: readonly { member: Connection; id: string }[],
  ): Promise<(number | null)[]> {
    const group = d.group;
    const now = Date.now();
    const fresh = (id: string) =>
      idTime(id) + options.retentionMs > now &&
      (group?.value?.cursor == null || id > group.value.cursor);
    if (batch.length > 1 && group?.value && batch.every(({ id }) => fresh(id))) {
      const op = kv.atomic().check({ key: group.key, versionstamp: group.versionstamp });
      for (const { member, id } of batch) {
        const key = groupClaimKey(d.userId, d.name, id);
        op.check({ key, versionstamp: null }).set(key, newClaim(member, 1, now), { expireIn });
      }
      const result = await op.commit().catch((error) => {
        report("claiming events")(error);
        return null;
      });
      if (result?.ok) return batch.map(() => 1);
    }
    // One at a time: a released event's claim exists, the group moved on, or one was taken.
    const attempts: (number | null)[] = [];
    for (const { member, id } of batch) {
      attempts.push(
        await claim(d, member, id).catch((error) => {
          report("claiming an event")(error);
          return null;
        }),
      );
    }
    return attempts;
  }

  /**
   * The group's claims from its cursor on, in event order, at most `limit`. Never all of them:
   * behind a member that holds an event unacked for up to ackTimeoutSeconds × maxAttempts,
   * the others' acked claims pile up, and a scan (one a second) read every one.
   */
  function claimsAfter(userId: string, name: string, cursor: string | null, limit: number) {
    const prefix = groupClaimsPrefix(userId, name);
    const selector = cursor === null ? { prefix } : { prefix, start: [...prefix, cursor] };
    return kv.list<GroupClaim>(selector, { limit });
  }

  /** Hands a member's event back (not acked in time, or the member left), unless acked. */
  async function release(d: Dispatcher, member: Connection): Promise<void> {
    const flight = member.group!.inFlight;
    const held = d.held.get(member);
    member.group!.inFlight = null;
    d.held.delete(member);
    if (held) clearTimeout(held.timer);
    if (!flight) return;
    const key = groupClaimKey(d.userId, d.name, flight.id);
    const entry = await kv.get<GroupClaim>(key);
    const claim = entry.value;
    if (claim && claim.member === member.id && claim.attempt === flight.attempt && !claim.acked) {
      const result = await kv.atomic().check(entry)
        .set(key, { ...claim, until: 0 }, { expireIn })
        .commit();
      if (result.ok && held && !d.stopped && (d.horizon === null || flight.id <= d.horizon)) {
        hold(d, flight.id, { event: held.event, avoid: member.id });
      }
    }
    if (!d.stopped) pump(d);
  }

  /** The next idle member round-robin whose filter takes the event, preferring not `avoid`. */
  function pick(d: Dispatcher, candidate: Candidate): Connection | null {
    let fallback: Connection | null = null;
    for (let n = 0; n < d.members.length; n++) {
      const member = d.members[(d.next + n) % d.members.length];
      if (member.closed || member.group!.inFlight !== null) continue;
      if (!matches(member.filter, candidate.event)) continue;
      if (member.id === candidate.avoid) {
        fallback ??= member;
        continue;
      }
      d.next = (d.next + n + 1) % d.members.length;
      return member;
    }
    return fallback;
  }

  /**
   * Sends candidates, oldest first, to idle members; one pass at a time per dispatcher. Stopping
   * waits for a pass (`pumping`): a claim written as members leave is released before KV closes.
   */
  function pump(d: Dispatcher): void {
    if (d.pumping) {
      d.repump = true;
      return;
    }
    d.pumping = true;
    const done = pumpPasses(d).catch(report("handing events to members")).finally(() => {
      d.pumping = false;
      pumping.delete(done);
    });
    pumping.add(done);
  }

  /** The passes of one `pump`, until nothing more can be handed out. */
  async function pumpPasses(d: Dispatcher): Promise<void> {
    let claimed = 0;
    do {
      d.repump = false;
      if (!d.ready || d.stopped) return;
      // One event for each idle member, oldest first, claimed in one commit: acks that come
      // in while a claim is written wait for it and are served together.
      const batch: { member: Connection; id: string; candidate: Candidate }[] = [];
      for (const id of [...d.pending.keys()].sort()) {
        if (batch.length >= MAX_CLAIMS_PER_COMMIT) break;
        if (!d.members.some((m) => !m.closed && m.group!.inFlight === null)) break;
        const candidate = d.pending.get(id)!;
        if (passed(d.group?.value, id)) {
          drop(d, id);
          continue;
        }
        const member = pick(d, candidate);
        if (!member) continue; // only busy members take it: it waits for one
        // Reserved while the claim is decided, so no other event goes to it meanwhile.
        member.group!.inFlight = { id, attempt: 0 };
        drop(d, id);
        d.claimedSince?.add(id);
        batch.push({ member, id, candidate });
      }
      claimed = batch.length;
      const attempts = await claimAll(d, batch);
      for (const [n, { member, id, candidate }] of batch.entries()) {
        const attempt = attempts[n];
        if (attempt === null) {
          counters.groupClaimsLost++;
          member.group!.inFlight = null;
          continue;
        }
        member.group!.inFlight = { id, attempt };
        const timer = setTimeout(() => {
          if (member.group!.inFlight?.id === id) {
            release(d, member).catch(report("releasing an unacked event"));
          }
        }, member.group!.ackTimeoutMs);
        d.held.set(member, { event: candidate.event, timer });
        if (d.stopped || !connections.deliver(member, withAttempt(candidate.event, attempt))) {
          // Closed under us: its leave may have run before the claim; release here too.
          await release(d, member);
        }
      }
      if (d.stopped) return;
      // A lost claim leaves its member idle, and the next candidate may be its.
    } while (d.repump || claimed > 0);
    // Everything held is sent and the log has more: read on now rather than at the tick.
    if (d.pending.size === 0 && d.horizon !== null && d.found) scan(d);
  }

  /** Scans now, or once more after the scan running now; resolves when done. */
  function scan(d: Dispatcher): Promise<void> {
    if (d.scanning) {
      d.rescan = true;
      return d.scanning;
    }
    return d.scanning = (async () => {
      do {
        d.rescan = false;
        try {
          await scanOnce(d);
        } finally {
          // A scan that failed half way must not leave its set growing with every claim.
          d.claimedSince = null;
          d.reserved = 0;
        }
      } while (d.rescan && !d.stopped);
    })().catch(report("scanning the log")).finally(() => {
      d.scanning = null;
      if (!d.stopped) {
        d.ready = true;
        pump(d);
      }
    });
  }

  /**
   * Reads the group, its claims and the log after its cursor: finds candidates, and advances
   * the cursor over the leading run of done events (acked, or matched by no member here).
   */
  async function scanOnce(d: Dispatcher): Promise<void> {
    let group = await kv.get<GroupRecord>(groupKey(d.userId, d.name));
    if (!group.value) {
      // Deleted while a member joined (DELETE saw none yet): made again where this isolate knew
      // it to be, within the account's limit like any join. Else each lost race would add a
      // group past MAX_GROUPS_PER_USER; over it, the members here are told it is gone.
      try {
        await ensureRecord(d.userId, d.name, { cursor: d.group?.value?.cursor ?? undefined });
      } catch (error) {
        if (!(error instanceof HttpError) || error.status !== 409) throw error;
        // Made again meanwhile, within the limit (another isolate's scan, a join): kept.
        if ((await kv.get(groupKey(d.userId, d.name))).value) return;
        for (const member of [...d.members]) connections.close(member, CLOSE.groupDeleted);
        return;
      }
      group = await kv.get<GroupRecord>(groupKey(d.userId, d.name));
      if (!group.value) return;
    }
    d.group = group;
    await syncMembers(d);
    // The events the cursor passed while members held them: those settled since leave the list.
    const settled = await settleOpen(d, group as Deno.KvEntry<GroupRecord>);
    if (!settled) return;
    group = d.group = settled;
    const record = settled.value;
    let openRoom = MAX_OPEN - (record.open?.length ?? 0);
    // With the claims being decided now: one may land after the list below is read.
    const claimedSince = d.claimedSince = new Set<string>();
    for (const member of d.members) {
      const flight = member.group!.inFlight;
      if (flight) claimedSince.add(flight.id);
    }
    const claims = new Map<string, GroupClaim>();
    const stamps = new Map<string, string>();
    let lastClaim: string | null = null;
    for await (const entry of claimsAfter(d.userId, d.name, record.cursor, MAX_WALK + 1)) {
      claims.set(lastClaim = entry.key[3] as string, entry.value);
      stamps.set(lastClaim, entry.versionstamp);
    }
    // Cut short: past the last claim read, an event's claim is unknown (claims of events that
    // expired first may fill the list), so the walk stops there, as at MAX_WALK.
    const claimsEnd = claims.size > MAX_WALK ? lastClaim : null;
    let atClaimsEnd = false;

    const now = Date.now();
    /** The leading run of done events after the cursor, which the cursor passes. */
    const done: DoneEvent[] = [];
    let advancing = true;
    let walked = 0;
    /** The last event the walk judged: none it has not judged lies at or below it. */
    let walkedTo: string | null = record.cursor;
    /** The last id fully seen; the read stops after it when full. */
    let last: string | null = record.cursor;
    let full = false;
    const found: LiveEvent[] = [];
    let foundChars = 0;
    const room = d.reserved = roomChars(d);
    const inFlight = new Set([...d.members].map((m) => m.group!.inFlight?.id));
    const events = eventsAfter(kv, {
      userId: d.userId,
      after: record.cursor,
      batchSize: 2,
      // Behind an event that is never acked, each scan walks the same events again: at the
      // account's read rate, like its catch-ups, not at the isolate's.
      pace: (bytes) => connections.paceRead(d.userId, bytes),
      match: (facts, id) => {
        if (full) return false;
        if (claimsEnd !== null && id > claimsEnd) atClaimsEnd = true;
        if (walked >= MAX_WALK || atClaimsEnd) {
          full = true;
          return true; // yields so the read can stop
        }
        walked++;
        walkedTo = id;
        const claim = claims.get(id);
        let candidate = false;
        if (claim?.acked) {
          if (advancing) done.push({ id, acked: true });
        } else if (claim && claim.until <= now && !anyMatch(d, facts)) {
          // Released or expired, and no member now takes it: passed as an unclaimed event no
          // member takes is, or it would hold the cursor until the event expires.
          if (advancing) done.push({ id, acked: false, released: stamps.get(id)! });
        } else if (claim && claim.until > now && advancing && openRoom > 0) {
          // Held by a member: passed into the record's open list, so that one event never
          // acked does not stop the group behind it (settleOpen looks at it again).
          openRoom--;
          done.push({ id, acked: false, held: true });
        } else if (claim) {
          advancing = false;
          // Released or expired: take it over when a member here can.
          candidate = claim.until <= now && localMatch(d, facts);
        } else if (!anyMatch(d, facts)) {
          if (advancing) done.push({ id, acked: false });
        } else if (!localMatch(d, facts)) advancing = false; // only a member elsewhere takes it
        else {
          advancing = false;
          candidate = true;
        }
        if (candidate && !d.pending.has(id) && !inFlight.has(id)) {
          if (found.length + d.pending.size >= MAX_PENDING || foundChars >= room) {
            full = true;
            return true;
          }
          last = id;
          return true;
        }
        last = id;
        return false;
      },
    });
    for await (const event of events) {
      if (full || d.stopped) break;
      found.push(event);
      foundChars += heldChars(event);
    }
    if (d.stopped) return;
    d.reserved = 0;
    for (const event of found) {
      if (!d.pending.has(event.id) && !claimedSince.has(event.id)) {
        hold(d, event.id, { event, avoid: null });
      }
    }
    d.horizon = full ? last : null;
    // Stopped for room rather than at the walk's end: read on as soon as the held ones are sent.
    d.found = found.length > 0 || (full && walked < MAX_WALK && !atClaimsEnd);
    if (full) {
      for (const id of [...d.pending.keys()]) if (last === null || id > last) drop(d, id);
    }

    // Claims past the last event walked, when the walk read on to the list's end or the log's:
    // their events expired before them (a claim's expiry runs from its last write), and no
    // event can come between. Passed too, or 5,001 of them would stop the group until they
    // expire (up to the retention).
    if (advancing && (atClaimsEnd || !full)) {
      for (const id of claims.keys()) {
        if (walkedTo === null || id > walkedTo) done.push({ id, acked: true });
      }
    }
    const fresh = found.some((event) => !d.lastFound.has(event.id));
    d.lastFound = new Set(found.map((event) => event.id));
    if (done.length > 0 || fresh) wake(d);
    else {
      d.idleScans++;
      d.skipTicks = Math.min(2 ** d.idleScans, MAX_IDLE_TICKS) - 1;
    }
    let entry: Deno.KvEntry<GroupRecord> = settled;
    let open = record.open ?? [];
    for (const step of advanceSteps(done)) {
      if (step.held) open = [...open, ...step.held];
      const next = withOpen({ ...record, cursor: step.cursor, updatedAt: now }, open);
      const op = kv.atomic().check(entry).set(entry.key, next);
      for (const id of step.deletes) op.delete(groupClaimKey(d.userId, d.name, id));
      // Claimed meanwhile by a member elsewhere: then it is not done; try again.
      for (const { id, versionstamp } of step.checks) {
        op.check({ key: groupClaimKey(d.userId, d.name, id), versionstamp });
      }
      const result = await op.commit();
      if (!result.ok) {
        d.rescan = true;
        return;
      }
      entry = d.group = { key: entry.key, value: next, versionstamp: result.versionstamp };
      counts.delete(d.userId);
      for (const id of d.pending.keys()) if (passed(next, id)) drop(d, id);
    }
  }

  /**
   * Looks again at the events of the record's open list: acked ones, and released ones no
   * member takes now (or expired), leave it, their claims deleted in one commit with it;
   * released ones a member here takes are held as candidates. The record as it is afterwards,
   * or null when another write came first (the scan runs again).
   */
  async function settleOpen(
    d: Dispatcher,
    group: Deno.KvEntry<GroupRecord>,
  ): Promise<Deno.KvEntry<GroupRecord> | null> {
    const open = group.value.open ?? [];
    if (open.length === 0) return group;
    const now = Date.now();
    const inFlight = new Set(d.members.map((m) => m.group!.inFlight?.id));
    const kept: string[] = [];
    const op = kv.atomic().check(group);
    let changed = false;
    for (let n = 0; n < open.length; n += 10) {
      const ids = open.slice(n, n + 10);
      const claims = await kv.getMany<GroupClaim[]>(
        ids.map((id) => groupClaimKey(d.userId, d.name, id)),
      );
      for (const [k, entry] of claims.entries()) {
        const id = ids[k];
        const claim = entry.value;
        let done = claim === null || claim.acked;
        if (claim && !claim.acked && claim.until <= now) {
          const event = await getEvent(kv, { userId: d.userId, id });
          if (event === null || !anyMatch(d, event)) done = true;
          else if (localMatch(d, event) && !d.pending.has(id) && !inFlight.has(id) && room(d)) {
            hold(d, id, { event, avoid: claim.member });
          }
        }
        if (!done) {
          kept.push(id);
          continue;
        }
        changed = true;
        // Unchanged since read, or another member took it meanwhile: then it stays open.
        op.check(entry);
        if (claim) op.delete(entry.key);
      }
    }
    if (!changed) return group;
    const next = withOpen({ ...group.value, updatedAt: now }, kept);
    const result = await op.set(group.key, next).commit();
    if (!result.ok) {
      d.rescan = true;
      return null;
    }
    counts.delete(d.userId);
    wake(d);
    return { key: group.key, value: next, versionstamp: result.versionstamp };
  }

  function dispatcherFor(userId: string, name: string): Dispatcher {
    let byName = dispatchers.get(userId);
    if (!byName) dispatchers.set(userId, byName = new Map());
    let d = byName.get(name);
    if (d) return d;
    const created: Dispatcher = {
      userId,
      name,
      members: [],
      next: 0,
      group: null,
      pending: new Map(),
      pendingChars: 0,
      reserved: 0,
      horizon: null,
      found: false,
      idleScans: 0,
      skipTicks: 0,
      lastFound: new Set(),
      ready: false,
      scanning: null,
      rescan: false,
      claimedSince: null,
      pumping: false,
      repump: false,
      stopped: false,
      stopTicks: () => {},
      remote: [],
      written: null,
      held: new Map(),
    };
    byName.set(name, d = created);
    created.stopTicks = every(() => {
      if (created.skipTicks === 0) return scan(created);
      created.skipTicks--;
    });
    scan(created);
    return created;
  }

  function stopDispatcher(d: Dispatcher): void {
    d.stopped = true;
    d.stopTicks();
    for (const { timer } of d.held.values()) clearTimeout(timer);
    // Other isolates stop counting on these members at once, not after MEMBERS_VALID_MS.
    // Only our own write: a dispatcher started since for the same group may have replaced it.
    if (d.written) {
      const key = groupMembersKey(d.userId, d.name, broker.origin);
      const done = kv.atomic().check({ key, versionstamp: d.written.versionstamp }).delete(key)
        .commit().then(() => {}, report("forgetting the members' record"));
      releasing.add(done);
      done.finally(() => releasing.delete(done));
    }
    const byName = dispatchers.get(d.userId);
    byName?.delete(d.name);
    if (byName?.size === 0) dispatchers.delete(d.userId);
  }

  connections.attachGroups({
    join(connection) {
      const d = dispatcherFor(connection.userId, connection.group!.name);
      d.members.push(connection);
      wake(d);
      pump(d);
    },
    leave(connection) {
      const d = dispatchers.get(connection.userId)?.get(connection.group!.name);
      if (!d) return;
      d.members = d.members.filter((member) => member !== connection);
      wake(d);
      if (d.members.length === 0) stopDispatcher(d);
      else d.next %= d.members.length;
      // The KV release runs even once the dispatcher stopped: others take the event over.
      const done = release(d, connection).catch(report("releasing a leaving member's event"));
      releasing.add(done);
      done.finally(() => releasing.delete(done));
    },
  });

  /** Each user's groups as last counted, or being counted: shared for COUNTS_FRESH_MS. */
  const counts = new Map<string, { at: number; groups: Promise<GroupCounts[]> }>();

  /**
   * The user's groups with their unacked and lag counts. Counting reads up to LAG_BUDGET claims
   * and events, inflating packs: requests of one account within COUNTS_FRESH_MS (side by side,
   * or a dashboard polling) share one count instead of each reading the log again. A join, an
   * ack or a cursor moved here counts afresh; changes elsewhere show within COUNTS_FRESH_MS.
   */
  function countGroups(userId: string): Promise<GroupCounts[]> {
    const now = Date.now();
    const known = counts.get(userId);
    if (known && now - known.at < COUNTS_FRESH_MS) return known.groups;
    if (counts.size >= MAX_COUNTED_USERS) {
      for (const [id, entry] of counts) if (now - entry.at >= COUNTS_FRESH_MS) counts.delete(id);
    }
    const groups = countGroupsAfresh(userId);
    counts.set(userId, { at: now, groups });
    // A failed count is not shared: the next request tries again.
    groups.catch(() => counts.delete(userId));
    return groups;
  }

  async function countGroupsAfresh(userId: string): Promise<GroupCounts[]> {
    const records: GroupRecord[] = [];
    for await (
      const entry of kv.list<GroupRecord>({ prefix: groupsOfUserPrefix(userId) }, {
        limit: MAX_GROUPS_PER_USER * 2,
      })
    ) records.push(entry.value);
    // Claims are counted without reading bodies, within one budget for the whole answer:
    // twenty groups would otherwise read 200,000 claims per request.
    let budget = LAG_BUDGET;
    const claimCounts: { unacked: number; unackedCapped: boolean }[] = [];
    for (const record of records) {
      let unacked = 0;
      let claimsRead = 0;
      const claimCap = Math.min(LAG_CAP, budget);
      if (claimCap > 0) {
        for await (const claim of claimsAfter(userId, record.name, record.cursor, claimCap)) {
          claimsRead++;
          // The list starts at the cursor's own claim: an open event, counted below.
          if (record.cursor !== null && (claim.key[3] as string) <= record.cursor) continue;
          if (!claim.value.acked) unacked++;
        }
      }
      budget -= claimsRead;
      claimCounts.push({ unacked, unackedCapped: claimsRead >= claimCap });
    }
    const lags = await countLag(userId, records.map((record) => record.cursor), budget);
    return records.map((record, n) => {
      // Events the cursor passed while held are still to be acked, and behind in the log.
      const open = record.open?.length ?? 0;
      return {
        name: record.name,
        createdAt: record.createdAt,
        cursor: record.cursor,
        lag: lags[n].lag + open,
        lagCapped: lags[n].lagCapped,
        // The claims were not all read: more may be unacked than counted.
        unacked: claimCounts[n].unacked + open,
        unackedCapped: claimCounts[n].unackedCapped,
      };
    });
  }

  /**
   * Each cursor's lag, from one read of the log after the lowest (each group reading it cost
   * an account's twenty groups twenty reads), within LAG_CAP per group, `events` in all and
   * LAG_BYTES, at the account's read rate. Capped: more may follow than counted.
   */
  async function countLag(
    userId: string,
    cursors: (string | null)[],
    events: number,
  ): Promise<{ lag: number; lagCapped: boolean }[]> {
    const lag = cursors.map(() => 0);
    /** Cursors lowest first ("" for none), as indexes into `cursors`. */
    const order = cursors.map((_, n) => n).sort((a, b) => {
      const [x, y] = [cursors[a] ?? "", cursors[b] ?? ""];
      return x < y ? -1 : x > y ? 1 : 0;
    });
    if (order.length === 0) return [];
    if (events <= 0) return lag.map(() => ({ lag: 0, lagCapped: true }));
    const top = order.at(-1)!;
    /** Cursors below the event being counted: the first `behind` of `order`. */
    let behind = 0;
    let read = 0;
    let bytes = 0;
    let complete = true;
    const counting = eventsAfter(kv, {
      userId,
      after: cursors[order[0]],
      pace: async (size) => {
        bytes += size;
        if (bytes > LAG_BYTES) throw STOP_COUNTING;
        await connections.paceRead(userId, size);
      },
      match: (_facts, id) => {
        while (behind < order.length && (cursors[order[behind]] ?? "") < id) behind++;
        for (let k = 0; k < behind; k++) lag[order[k]]++;
        read++;
        // Every group reached its cap, or the whole count its events: yields, to stop.
        return (behind === order.length && lag[top] >= LAG_CAP) || read >= events;
      },
    });
    try {
      for await (const _ of counting) {
        complete = false;
        break;
      }
    } catch (error) {
      if (error !== STOP_COUNTING) throw error;
      complete = false;
    }
    return lag.map((counted) => {
      const capped = counted >= LAG_CAP || !complete;
      return { lag: Math.min(counted, LAG_CAP), lagCapped: capped };
    });
  }

  const unsubscribe = broker.subscribe((message) => {
    if (message.kind === "events") {
      const byName = dispatchers.get(message.userId);
      if (!byName) return;
      for (const d of byName.values()) {
        for (const event of message.events) {
          // Past what is held, the log keeps it for the next scan, in order.
          if (d.horizon !== null || !room(d)) {
            if (d.horizon === null) d.horizon = [...d.pending.keys()].sort().at(-1) ?? "";
            wake(d);
            continue;
          }
          if (localMatch(d, event)) hold(d, event.id, { event, avoid: null });
        }
        pump(d);
      }
    } else if (message.kind === "group_ack") {
      const d = dispatchers.get(message.userId)?.get(message.name);
      const member = d?.members.find((one) => one.id === message.connectionId);
      if (!d || !member || member.group!.inFlight?.id !== message.id) return;
      member.group!.inFlight = null;
      const held = d.held.get(member);
      if (held) clearTimeout(held.timer);
      d.held.delete(member);
      wake(d);
      pump(d);
    }
  });

  return {
    async prepare(userId, name) {
      if (!GROUP_NAME.test(name)) {
        throw new HttpError(
          400,
          `Cannot join group: "${name.slice(0, 70)}" is not a group name (1–64 letters, ` +
            'digits, "_", "." or "-")',
        );
      }
      await ensureRecord(userId, name);
      counts.delete(userId);
    },
    async ack({ userId, name, connectionId, eventId, sees }) {
      if (!GROUP_NAME.test(name)) {
        throw new HttpError(400, `Cannot ack: "${name.slice(0, 70)}" is not a group name`);
      }
      const cannot = `Cannot ack ${eventId} in group "${name}"`;
      // A token limited to some endpoints settles only their events: a member of the group
      // may be a full token's, holding another endpoint's event.
      if (sees && !(await hasEvent(kv, { userId, id: eventId, match: sees }))) {
        throw new HttpError(404, `${cannot}: no such event for this token`);
      }
      const key = groupClaimKey(userId, name, eventId);
      const entry = await kv.get<GroupClaim>(key);
      const claim = entry.value;
      if (!claim) {
        throw new HttpError(
          409,
          `${cannot}: no member holds it (never sent to this group, or acked already)`,
        );
      }
      if (claim.member !== connectionId) {
        throw new HttpError(409, `${cannot}: it is held by another member, not this connection`);
      }
      if (claim.acked) throw new HttpError(409, `${cannot}: it was acked already`);
      const result = await kv.atomic().check(entry)
        .set(key, { ...claim, acked: true }, { expireIn })
        .commit();
      if (!result.ok) {
        throw new HttpError(409, `${cannot}: it was handed to another member meanwhile`);
      }
      counts.delete(userId);
      broker.publish({ kind: "group_ack", userId, name, connectionId, id: eventId });
    },
    async remove(userId, name, clients) {
      if (!GROUP_NAME.test(name)) {
        throw new HttpError(400, `Cannot delete group: "${name.slice(0, 70)}" is not a group name`);
      }
      const key = groupKey(userId, name);
      if (!(await kv.get(key)).value) {
        throw new HttpError(404, `Cannot delete group "${name}": there is no such group`);
      }
      const members = (await clients()).filter((client) => client.group === name).length;
      if (members > 0) {
        throw new HttpError(
          409,
          `Cannot delete group "${name}": ${members} member${members === 1 ? " is" : "s are"} ` +
            "connected; close them first",
        );
      }
      // Instances sharing KV answer "who is connected" within 250 ms or not at all; the
      // members' records their scans keep are the sure word (a crashed one's lapses in 30 s).
      const now = Date.now();
      for await (
        const entry of kv.list<GroupMembers>({ prefix: groupMembersPrefix(userId, name) })
      ) {
        // This isolate's own record outlives its last member by one commit: the list above
        // already counted what is here.
        if (entry.key[3] !== broker.origin && entry.value.until > now) {
          throw new HttpError(
            409,
            `Cannot delete group "${name}": members are connected on another instance; ` +
              "close them first",
          );
        }
      }
      // The record and its name in the account's list go together (see ensureRecord).
      const namesKey = groupNamesKey(userId);
      for (;;) {
        const [record, names] = await kv.getMany<[GroupRecord, string[]]>([key, namesKey]);
        const op = kv.atomic().check(record, names).delete(key);
        if (names.value) op.set(namesKey, names.value.filter((one) => one !== name));
        if ((await op.commit()).ok) break;
      }
      counts.delete(userId);
      // Then what hangs off it, in commits under KV's limits; claims would expire anyway.
      for (const prefix of [groupClaimsPrefix(userId, name), groupMembersPrefix(userId, name)]) {
        let op = kv.atomic();
        let count = 0;
        for await (const entry of kv.list({ prefix })) {
          op.delete(entry.key);
          if (++count % MAX_ADVANCE_DELETES === 0) {
            await op.commit();
            op = kv.atomic();
          }
        }
        await op.commit();
      }
    },
    held: accountChars,
    async describe(userId, clients) {
      const counted = await countGroups(userId);
      if (counted.length === 0) return [];
      const connected = await clients();
      return counted.map((group) => ({
        ...group,
        members: connected.filter((client) => client.group === group.name).map((client) => ({
          id: client.id,
          transport: client.transport,
          connectedAt: client.connectedAt,
          inFlight: client.inFlight ?? null,
        })),
      }));
    },
    async stop() {
      // Bounded: a platform kills an instance 5 s after asking it to stop, and a KV write that
      // never answers must not hold the shutdown. What is not written by then expires by `until`.
      let timer: ReturnType<typeof setTimeout> | undefined;
      const deadline = new Promise<void>((resolve) =>
        timer = setTimeout(() => resolve(), STOP_WAIT_MS)
      );
      const settled = async (promises: Set<Promise<void>>) => {
        await Promise.race([Promise.all(promises), deadline]);
      };
      try {
        await settled(releasing);
        unsubscribe();
        for (const byName of [...dispatchers.values()]) {
          for (const d of [...byName.values()]) stopDispatcher(d);
        }
        await settled(pumping);
        await settled(releasing);
      } finally {
        clearTimeout(timer);
        stopped = true;
      }
    },
  };
}
