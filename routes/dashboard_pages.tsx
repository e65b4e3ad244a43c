/** The dashboard home: webhook URLs, the test button, usage, and the live event inspector. */
import { Hono } from "hono";
import { z } from "zod";
import { DashboardPage } from "../components/dashboard/DashboardPage.tsx";
import { listEndpoints } from "../lib/endpoints/endpoints.ts";
import { HttpError } from "../lib/http/http_error.ts";
import { sendTestWebhook, TEST_WEBHOOK_BODY } from "../lib/intake/sample_webhook.ts";
import { endpointUrl, ingestBase } from "../lib/endpoints/urls.ts";
import { monthUsageSnapshot } from "../lib/billing/usage.ts";
import type { AppEnv } from "./_env.ts";
import { requireSameOrigin } from "./_auth.ts";
import { readForm } from "./_parse.ts";
import {
  loadViewer,
  pageError,
  pageFlash,
  redirect,
  requireViewer,
  sendPage,
  viewerOf,
} from "./_page.tsx";

/** How often the inspector refreshes the connected-client count. */
const CLIENT_POLL_MS = 5000;

const testForm = z.object({ slug: z.string().min(1, "is required").max(100) });

/** /dashboard and its test-webhook form. */
export function dashboardPageRoutes(): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  app.onError(pageError);

  app.get("/dashboard", loadViewer, requireViewer, async (c) => {
    const { kv, config, groups, presence } = c.get("services");
    const { user } = viewerOf(c);
    const [endpoints, usage, flash, groupList] = await Promise.all([
      listEndpoints(kv, user.id),
      monthUsageSnapshot(kv, { userId: user.id }),
      pageFlash(c),
      groups.describe(user.id, () => presence.list(user.id)),
    ]);
    const urls = Object.fromEntries(endpoints.map((e) => [e.slug, endpointUrl(config, e.slug)]));
    return sendPage(
      c,
      <DashboardPage
        user={user}
        endpoints={endpoints}
        urls={urls}
        used={usage.used}
        usage={{ month: usage.month, head: usage.head }}
        freeAllowance={config.freeMonthlyLimit}
        flash={flash}
        ingestBase={ingestBase(config)}
        pollMs={CLIENT_POLL_MS}
        testBody={TEST_WEBHOOK_BODY}
        groups={groupList}
      />,
    );
  });

  app.post("/dashboard/test-webhook", requireSameOrigin, loadViewer, requireViewer, async (c) => {
    const form = await readForm(c, testForm);
    if (!form.ok) throw new HttpError(400, "Cannot send test webhook: slug is required");
    try {
      const { id } = await sendTestWebhook(c.get("services"), {
        userId: viewerOf(c).user.id,
        slug: form.data.slug,
      });
      return await redirect(c, "/dashboard", {
        flash: { kind: "success", message: `Sent a test webhook: event ${id}.` },
      });
    } catch (error) {
      // Quota and rate refusals are answers to show, not faults.
      if (!(error instanceof HttpError) || error.status === 404) throw error;
      return await redirect(c, "/dashboard", { flash: { kind: "error", message: error.message } });
    }
  });

  return app;
}
