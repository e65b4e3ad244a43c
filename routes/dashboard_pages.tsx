/** The dashboard home: webhook URLs, the test button, usage, and the live event inspector. */
import { Hono } from "hono";
import { z } from "zod";
import { CopyField } from "../components/Copyable.tsx";
import { Layout } from "../components/Layout.tsx";
import { Notice } from "../components/Notice.tsx";
import { QuotaAlert } from "../components/QuotaAlert.tsx";
import { listEndpoints } from "../lib/endpoints/endpoints.ts";
import { HttpError } from "../lib/http/http_error.ts";
import { Island } from "../components/Island.tsx";
import { sendTestWebhook, TEST_WEBHOOK_BODY } from "../lib/intake/sample_webhook.ts";
import { endpointUrl, ingestBase } from "../lib/endpoints/urls.ts";
import { monthUsage } from "../lib/billing/usage.ts";
import { type AppEnv, requireSameOrigin } from "./_env.ts";
import {
  loadViewer,
  pageError,
  pageFlash,
  readForm,
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
    const { kv, config } = c.get("services");
    const { user } = viewerOf(c);
    const [endpoints, used, flash] = await Promise.all([
      listEndpoints(kv, user.id),
      monthUsage(kv, { userId: user.id }),
      pageFlash(c),
    ]);
    const limit = user.monthlyLimit;
    return sendPage(
      c,
      <Layout title="Dashboard: WebSocks" user={user} section="dashboard" wide>
        <div class="page-head">
          <h1>Dashboard</h1>
          <p class="usage" title="Accepted webhooks this calendar month (UTC)">
            <strong>{used.toLocaleString("en")}</strong>
            {limit === null
              ? " webhooks this month"
              : ` of ${limit.toLocaleString("en")} webhooks this month`}
          </p>
        </div>
        <Notice flash={flash} />
        <QuotaAlert
          used={used}
          limit={limit}
          plan={user.plan}
          freeAllowance={config.freeMonthlyLimit}
          linkToUsage
        />
        <section class="card" aria-labelledby="urls-title">
          <h2 id="urls-title">{endpoints.length > 1 ? "Your webhook URLs" : "Your webhook URL"}</h2>
          {endpoints.length === 0
            ? (
              <p>
                You have no endpoint yet. <a href="/dashboard/endpoints">Create one</a>{" "}
                to get a webhook URL.
              </p>
            )
            : (
              <>
                <p class="muted">
                  Point any sender at it: every POST is stored and shown below as it arrives.
                </p>
                <ul class="endpoint-urls">
                  {endpoints.map((endpoint, i) => (
                    <li key={endpoint.id}>
                      <CopyField
                        id={`url-${i}`}
                        label={endpoints.length > 1
                          ? `${endpoint.name} webhook URL`
                          : "Webhook URL"}
                        value={endpointUrl(config, endpoint.slug)}
                      />
                      <Island
                        name="SendTestWebhook"
                        props={{
                          url: endpointUrl(config, endpoint.slug),
                          slug: endpoint.slug,
                          body: TEST_WEBHOOK_BODY,
                        }}
                      />
                    </li>
                  ))}
                </ul>
              </>
            )}
        </section>
        <noscript>
          <p class="notice info">
            The live event inspector needs JavaScript: turn it on to watch webhooks arrive, open
            their details, resend them and copy them as curl. Everything else here works without it.
          </p>
        </noscript>
        <Island
          name="EventInspector"
          props={{
            // Only "copy as curl" uses it: senders post to the ingest host.
            publicUrl: ingestBase(config),
            endpoints: endpoints.map((e) => ({ slug: e.slug, name: e.name })),
            pollMs: CLIENT_POLL_MS,
          }}
        />
      </Layout>,
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
