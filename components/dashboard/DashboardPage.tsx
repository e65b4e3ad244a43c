/** The dashboard home: webhook URLs with their test buttons, this month's use, the inspector. */
import { CopyField } from "../Copyable.tsx";
import { Layout } from "../Layout.tsx";
import { Notice } from "../Notice.tsx";
import { QuotaAlert } from "../QuotaAlert.tsx";
import type { Endpoint } from "../../lib/endpoints/endpoints.ts";
import type { Flash } from "../../lib/accounts/flash.ts";
import type { User } from "../../lib/accounts/users.ts";
import { Island } from "../Island.tsx";
import { GroupsTable } from "./GroupsTable.tsx";
import type { GroupSummary } from "../../lib/fanout/groups.ts";

/** What the dashboard shows; URLs and settings come from the server's configuration. */
export interface DashboardPageProps {
  user: User;
  endpoints: Endpoint[];
  /** Each endpoint's webhook URL, by slug. */
  urls: Record<string, string>;
  /** Webhooks accepted this month. */
  used: number;
  /** The month `used` counts and the newest event id read with it, for the live count. */
  usage: { month: string; head: string | null };
  /** FREE_MONTHLY_LIMIT, for the quota alert's remedy. */
  freeAllowance: number;
  flash: Flash | null;
  /** Where senders post (the ingest host): "copy as curl" uses it. */
  ingestBase: string;
  /** How often the inspector refreshes the connected-client count. */
  pollMs: number;
  /** The body the test button posts. */
  testBody: string;
  /** The account's consumer groups; the section is left out when there are none. */
  groups?: GroupSummary[];
}

/** /dashboard */
export function DashboardPage(props: DashboardPageProps) {
  const { user, endpoints, used } = props;
  const limit = user.monthlyLimit;
  return (
    <Layout title="Dashboard: WebSocks" user={user} section="dashboard" wide>
      <div class="page-head">
        <h1>Dashboard</h1>
        <Island
          name="MonthUsage"
          props={{ used, limit, month: props.usage.month, head: props.usage.head }}
        />
      </div>
      <Notice flash={props.flash} />
      <QuotaAlert
        used={used}
        limit={limit}
        plan={user.plan}
        freeAllowance={props.freeAllowance}
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
                      label={endpoints.length > 1 ? `${endpoint.name} webhook URL` : "Webhook URL"}
                      value={props.urls[endpoint.slug]}
                    />
                    <Island
                      name="SendTestWebhook"
                      props={{
                        url: props.urls[endpoint.slug],
                        slug: endpoint.slug,
                        body: props.testBody,
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
          The live event inspector needs JavaScript: turn it on to watch webhooks arrive, open their
          details, resend them and copy them as curl. Everything else here works without it.
        </p>
      </noscript>
      <Island
        name="EventInspector"
        props={{
          // Only "copy as curl" uses it: senders post to the ingest host.
          publicUrl: props.ingestBase,
          endpoints: endpoints.map((e) => ({ slug: e.slug, name: e.name })),
          pollMs: props.pollMs,
        }}
      />
      <GroupsTable groups={props.groups ?? []} />
    </Layout>
  );
}
