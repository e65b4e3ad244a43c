/** What a signed-in user does to their own account: change the password, delete the account. */
import type Stripe from "stripe";
import type { Broker } from "../fanout/broker.ts";
import { confirmPassword, type LoginLimits } from "./login_guard.ts";
import { endUserSessions } from "./sessions.ts";
import { changePassword, type User } from "./users.ts";
import type { DeletionMarker, Deletions } from "./deletion.ts";
import { retireMailTokens } from "../mail/mail_tokens.ts";

/** Who asks, from where: what the password guard needs. */
export interface PasswordProof {
  user: User;
  password: string;
  address: string;
  /** The caller's device cookie, if any (login_guard.ts). */
  device: string | null;
  limits: LoginLimits;
}

/**
 * Changes the password once the current one is proved (403 when wrong, 429 past the guard's
 * limits), voids a pending change of address (whoever asked for it knew the old password), then
 * ends every other session of the user and closes the streams they opened. Every session of
 * the old generation is void: the caller's own (`keepSessionId`, null when a token asked) must
 * be started again from the returned user. Returns that user, the device cookie value to set
 * and how many other sessions ended.
 */
export async function changeUserPassword(
  kv: Deno.Kv,
  options: PasswordProof & { newPassword: string; keepSessionId: string | null; broker: Broker },
): Promise<{ user: User; device: string | null; endedSessions: number }> {
  const device = await confirmPassword(kv, {
    ...options,
    action: "change password",
    remember: true,
  });
  const user = await changePassword(kv, {
    userId: options.user.id,
    password: options.newPassword,
    checked: options.user,
  });
  await retireMailTokens(kv, { userId: options.user.id, kinds: ["change"] });
  const endedSessions = await endUserSessions(kv, options.broker, {
    userId: options.user.id,
    exceptId: options.keepSessionId,
  });
  return { user, device, endedSessions };
}

/**
 * Deletes the account once its password is proved: the Stripe subscription is cancelled, the
 * account is unreachable when this returns, and its keys are swept in the background.
 */
export async function deleteUserAccount(
  kv: Deno.Kv,
  options: PasswordProof & { deletions: Deletions; stripe: Stripe | null },
): Promise<DeletionMarker> {
  await confirmPassword(kv, { ...options, action: "delete account", remember: false });
  return await options.deletions.begin({ userId: options.user.id, stripe: options.stripe });
}
