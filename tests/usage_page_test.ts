/**
 * The usage and billing page, /dashboard/usage: handler tests against a real server (what it
 * shows logged in and out, the cap form's answers, CSRF), the display helpers, and a Chromium
 * test that a month of counters draws the daily chart right. Counters are written straight into
 * KV, as ingest keeps them; no test measures time. A failing browser test leaves a screenshot in
 * tests/screenshots/.
 */
import assert from "node:assert/strict";
import type { Browser, Page } from "playwright-core";
import { niceScale } from "../components/UsageChart.tsx";
import { quotaAlert } from "../components/QuotaAlert.tsx";
import { setPlan } from "../lib/billing/plans.ts";
import { formatCount, formatUsd } from "../lib/shared/format.ts";
import { generateInvoices, previousMonth } from "../lib/billing/invoices.ts";
import { dayOf, monthOf } from "../lib/billing/usage.ts";
import { launchChromium, saveScreenshot } from "./chromium.ts";
import { postWebhook, signUp, startTestServer, type TestServer, type TestUser } from "./helpers.ts";

/** GETs a page without following redirects. */
async function get(server: TestServer, path: string, cookie?: string): Promise<Response> {
  return await fetch(`${server.url}${path}`, {
    headers: cookie ? { Cookie: cookie } : {},
    redirect: "manual",
  });
}

/** GETs the usage page as `user`, asserting status and content type. */
async function usagePage(server: TestServer, user: TestUser): Promise<string> {
  const response = await get(server, "/dashboard/usage", user.cookie);
  assert.equal(response.status, 200);
  assert.equal(response.headers.get("content-type"), "text/html; charset=utf-8");
  return await response.text();
}

/** POSTs the cap form as a browser on our page would (with our Origin unless told otherwise). */
async function postCap(
  server: TestServer,
  user: TestUser | null,
  monthlyCap: string,
  headers: Record<string, string> = { Origin: server.url },
): Promise<Response> {
  return await fetch(`${server.url}/dashboard/usage/cap`, {
    method: "POST",
    headers: {
      "Content-Type": "application/x-www-form-urlencoded",
      ...(user ? { Cookie: user.cookie } : {}),
      ...headers,
    },
    body: new URLSearchParams({ monthlyCap }),
    redirect: "manual",
  });
}

/** The user's plan and cap as the API reports them. */
async function billing(server: TestServer, user: TestUser) {
  const response = await fetch(`${server.url}/api/billing`, {
    headers: { Authorization: `Bearer ${user.token}` },
  });
  assert.equal(response.status, 200);
  return await response.json();
}

/** Adds to a KV counter, as ingest does. */
async function addCount(server: TestServer, key: Deno.KvKey, n: number): Promise<void> {
  const result = await server.services.kv.atomic().sum(key, BigInt(n)).commit();
  assert.ok(result.ok);
}

/** The text of the element carrying `data-testid`. */
function testId(page: string, id: string): string | undefined {
  return page.match(new RegExp(`data-testid="${id}"[^>]*>([^<]*)<`))?.[1];
}

/** The `<meter>` tag of the quota bar, or undefined without one. */
function meter(page: string): string | undefined {
  return page.match(/<meter\b[^>]*>/)?.[0];
}

/** The cap field's `<input>` tag. */
function capInput(page: string): string {
  const input = page.match(/<input\b[^>]*name="monthlyCap"[^>]*>/)?.[0];
  assert.ok(input, "no cap field");
  return input;
}

/** Whether markup has an input with this value (an empty one renders as a bare `value`). */
function hasValue(markup: string, value: string): boolean {
  return value === "" ? /\svalue(=""|[\s/>])/.test(markup) : markup.includes(`value="${value}"`);
}

/** Every `<g class="day" …>` of the chart: its day and numbers. */
function dayGroups(page: string): { day: string; accepted: number; rejected: number }[] {
  return [...page.matchAll(
    /<g class="day" data-day="([\d-]+)" data-accepted="(\d+)" data-rejected="(\d+)">/g,
  )].map((m) => ({ day: m[1], accepted: Number(m[2]), rejected: Number(m[3]) }));
}

Deno.test("[usage-page] logged out, the page and its cap form send the visitor to log in", async () => {
  await using server = await startTestServer();
  const page = await get(server, "/dashboard/usage");
  assert.equal(page.status, 303);
  assert.equal(page.headers.get("location"), "/login?next=%2Fdashboard%2Fusage");
  await page.body?.cancel();
  const form = await postCap(server, null, "10");
  assert.equal(form.status, 303);
  assert.equal(form.headers.get("location"), "/login");
  await form.body?.cancel();
  // After logging in, the log-in page sends the visitor back to the usage page.
  const login = await get(server, "/login?next=%2Fdashboard%2Fusage");
  assert.match(await login.text(), /name="next" value="\/dashboard\/usage"/);
});

Deno.test("[usage-page] a Free user sees the plan, the bar, refusals, $0.00, the chart and no invoices", async () => {
  await using server = await startTestServer({ FREE_MONTHLY_LIMIT: "1000" });
  const user = await signUp(server);
  for (let i = 0; i < 3; i++) {
    const response = await postWebhook(user.webhookUrl, "{}");
    assert.equal(response.status, 200);
    await response.body?.cancel();
  }
  const now = new Date();
  await addCount(server, ["usage_rejected_month", user.id, monthOf(now)], 2);
  await addCount(server, ["usage_rejected_day", user.id, dayOf(now)], 2);

  const response = await get(server, "/dashboard/usage", user.cookie);
  assert.equal(response.status, 200);
  assert.equal(response.headers.get("content-type"), "text/html; charset=utf-8");
  assert.equal(response.headers.get("cache-control"), "no-store");
  const csp = response.headers.get("content-security-policy") ?? "";
  assert.match(csp, /(^|; )style-src 'self'(;|$)/);
  assert.match(csp, /(^|; )script-src 'self'(;|$)/);
  const page = await response.text();
  assert.doesNotMatch(page, /\sstyle=/i, "an inline style");
  assert.doesNotMatch(page, /<script\b/i, "the page needs no script");
  assert.doesNotMatch(page, /\son[a-z]+=/i, "an inline event handler");

  assert.match(page, /<a href="\/dashboard\/usage" aria-current="page">Usage<\/a>/);
  assert.match(page, /<h1>Usage and billing<\/h1>/);
  assert.match(page, /Free plan/);
  assert.equal(testId(page, "used"), "3");
  assert.equal(testId(page, "limit"), "1,000");
  const bar = meter(page);
  assert.ok(bar, "no quota bar");
  assert.match(bar, /\bmax="1000"/);
  assert.match(bar, /\bvalue="3"/);
  assert.equal(testId(page, "accepted"), "3");
  assert.equal(testId(page, "refused"), "2");
  assert.equal(testId(page, "cost"), "$0.00");
  assert.equal(testId(page, "projected"), "$0.00");
  assert.doesNotMatch(page, /quota-alert/, "no alert at 3 of 1,000");

  // The chart: a bar group per day so far, today's with today's numbers; accessible.
  assert.match(page, /<svg[^>]*role="img"[^>]*aria-labelledby="chart-title chart-desc"/);
  assert.match(page, /<title id="chart-title">Webhooks per day, \w+ \d{4}<\/title>/);
  assert.match(page, /<desc id="chart-desc">From \w+ 1 to \w+ \d+: 3 accepted and 2 refused\./);
  const groups = dayGroups(page);
  assert.equal(groups.length, now.getUTCDate());
  assert.deepEqual(groups.at(-1), { day: dayOf(now), accepted: 3, rejected: 2 });
  assert.ok(groups.slice(0, -1).every((g) => g.accepted === 0 && g.rejected === 0));

  // The cap form: a plain form with a numeric text field, prefilled with the allowance.
  assert.match(page, /<form method="post" action="\/dashboard\/usage\/cap"/);
  const input = capInput(page);
  assert.match(input, /value="1000"/);
  assert.match(input, /inputmode="numeric"/);
  assert.match(page, /Free includes 1,000 webhooks a month/);
  assert.match(page, /No invoices yet/);
});

Deno.test("[usage-page] cap form: a lower cap is saved with a 303; above the allowance is refused next to the field", async () => {
  await using server = await startTestServer({ FREE_MONTHLY_LIMIT: "1000" });
  const user = await signUp(server);

  const saved = await postCap(server, user, "500");
  assert.equal(saved.status, 303);
  assert.equal(saved.headers.get("location"), "/dashboard/usage");
  await saved.body?.cancel();
  let page = await usagePage(server, user);
  assert.match(page, /Your monthly cap is now 500 webhooks: past it, senders get 402/);
  assert.equal(testId(page, "limit"), "500");
  assert.match(meter(page) ?? "", /\bmax="500"/);
  assert.match(capInput(page), /value="500"/);
  assert.equal((await billing(server, user)).monthlyLimit, 500);
  // The flash is shown once.
  assert.doesNotMatch(await usagePage(server, user), /Your monthly cap is now/);

  for (
    const [typed, message] of [
      [
        "5000",
        "Cannot set cap: the Free plan allows at most 1000 webhooks a month; upgrade to Pro to " +
        "raise it",
      ],
      ["", "Cannot set cap: the Free plan allows at most 1000 webhooks a month"],
      ["lots", "Cannot set cap: the cap must be a whole number of webhooks, like 5000."],
      ["-5", "Cannot set cap: the cap must be a whole number of webhooks, like 5000."],
      ["2.5", "Cannot set cap: the cap must be a whole number of webhooks, like 5000."],
      ["99999999999999", "Cannot set cap: the cap must be at most 1,000,000,000,000 webhooks."],
    ]
  ) {
    const refused = await postCap(server, user, typed);
    assert.equal(refused.status, 400, typed);
    assert.equal(refused.headers.get("content-type"), "text/html; charset=utf-8");
    page = await refused.text();
    // The message sits under the field, tied to it, and what was typed is kept.
    const field = page.match(/<div class="field invalid">[\s\S]*?<\/div>/)?.[0] ?? "";
    assert.ok(field.includes('name="monthlyCap"'), `${typed}: the field is not marked invalid`);
    assert.ok(field.includes('aria-invalid="true"'), typed);
    assert.ok(field.includes('aria-describedby="field-monthlyCap-hint field-monthlyCap-error"'));
    assert.ok(hasValue(field, typed), `${typed}: not kept`);
    const error = field.match(/<p id="field-monthlyCap-error" class="field-error">([^<]*)<\/p>/);
    assert.ok(error?.[1].startsWith(message), `${typed}: ${error?.[1]}`);
  }
  assert.equal((await billing(server, user)).monthlyLimit, 500, "refusals changed nothing");

  // Thousands separators are fine.
  const commas = await postCap(server, user, "1,000");
  assert.equal(commas.status, 303);
  await commas.body?.cancel();
  assert.equal((await billing(server, user)).monthlyCap, 1000);
});

Deno.test("[usage-page] cap form posts from another site are refused (403) and change nothing", async () => {
  await using server = await startTestServer();
  const user = await signUp(server);
  const forged = await postCap(server, user, "1", { Origin: "https://evil.example" });
  assert.equal(forged.status, 403);
  assert.equal(forged.headers.get("content-type"), "text/html; charset=utf-8");
  assert.match(await forged.text(), /Forbidden: cross-site request refused/);
  const fetchSite = await postCap(server, user, "1", { "Sec-Fetch-Site": "cross-site" });
  assert.equal(fetchSite.status, 403);
  await fetchSite.body?.cancel();
  const after = await billing(server, user);
  assert.equal(after.monthlyCap, null);
  assert.equal(after.monthlyLimit, 1000);
});

Deno.test("[usage-page] Pro: cost in dollars, the cap in dollars, an empty cap removes the limit", async () => {
  await using server = await startTestServer({ FREE_MONTHLY_LIMIT: "1000" });
  const user = await signUp(server);
  await setPlan(server.services.kv, { email: user.email, plan: "pro", freeAllowance: 1000 });
  for (let i = 0; i < 3; i++) await (await postWebhook(user.webhookUrl, "{}")).body?.cancel();

  let page = await usagePage(server, user);
  assert.match(page, /Pro plan/);
  assert.equal(testId(page, "used"), "3");
  assert.match(page, / \(no cap\)/);
  assert.equal(meter(page), undefined, "no bar without a cap");
  assert.equal(testId(page, "cost"), "$0.0003");
  // The projection depends on the day of the month: check its form, and that it is no less.
  const projected = testId(page, "projected") ?? "";
  assert.match(projected, /^\$[\d,]+\.(\d{2}|\d{4})$/);
  assert.ok(Number(projected.replace(/[$,]/g, "")) >= 0.0003, projected);
  assert.ok(hasValue(capInput(page), ""), "the field is empty without a cap");
  assert.match(page, /Leave empty for no cap\. At \$0\.0001 each, 10,000 webhooks cost \$1\.00\./);

  assert.equal((await postCap(server, user, "10,000")).status, 303);
  page = await usagePage(server, user);
  assert.match(page, /Your monthly cap is now 10,000 webhooks \(\$1\.00\)/);
  assert.match(page, /Your cap of 10,000 webhooks is at most \$1\.00 a month\./);
  assert.match(meter(page) ?? "", /\bmax="10000"/);

  // At the cap: the 100% alert, with the way out a Pro user has.
  assert.equal((await postCap(server, user, "3")).status, 303);
  page = await usagePage(server, user);
  assert.match(
    page,
    /You have used all 3 webhooks of this month: senders now get 402 until the month ends\. Raise or remove your cap to accept more\./,
  );

  assert.equal((await postCap(server, user, "")).status, 303);
  page = await usagePage(server, user);
  assert.match(page, /Removed your monthly cap/);
  assert.equal((await billing(server, user)).monthlyLimit, null);
  assert.doesNotMatch(page, /quota-alert/);
});

Deno.test("[usage-page] the 80% and 100% alerts are the dashboard's, from one function", async () => {
  await using server = await startTestServer({ FREE_MONTHLY_LIMIT: "10" });
  const user = await signUp(server);
  const monthKey = ["usage_month", user.id, monthOf(new Date())];
  await addCount(server, monthKey, 8);
  const eighty = "You have used 80% of this month's 10 webhooks.";
  const usage = await usagePage(server, user);
  assert.ok(usage.includes(eighty), "usage page at 80%");
  const dashboard = await (await get(server, "/dashboard", user.cookie)).text();
  assert.ok(dashboard.includes(eighty), "dashboard at 80%");
  assert.match(dashboard, /<a href="\/dashboard\/usage">See usage and set your cap<\/a>/);
  assert.match(meter(usage) ?? "", /\bvalue="8"/);

  await addCount(server, monthKey, 2);
  const full = "You have used all 10 webhooks of this month: senders now get 402 until the " +
    "month ends. Upgrade to Pro to accept more.";
  assert.ok((await usagePage(server, user)).includes(full), "usage page at 100%");
  assert.ok((await (await get(server, "/dashboard", user.cookie)).text()).includes(full));
});

Deno.test("[usage-page] invoices: Free ones show $0.00, Pro amounts under a cent keep 4 decimals", async () => {
  await using server = await startTestServer({ FREE_MONTHLY_LIMIT: "1000" });
  const free = await signUp(server);
  const pro = await signUp(server);
  const { kv } = server.services;
  await setPlan(kv, { email: pro.email, plan: "pro", freeAllowance: 1000 });
  const last = previousMonth(new Date());
  const before = previousMonth(new Date(`${last}-15T00:00:00Z`));
  await addCount(server, ["usage_month", free.id, last], 640);
  await addCount(server, ["usage_month", pro.id, before], 123_456);
  await addCount(server, ["usage_month", pro.id, last], 3);
  await generateInvoices(kv, { period: before, freeAllowance: 1000 });
  await generateInvoices(kv, { period: last, freeAllowance: 1000 });

  const freePage = await usagePage(server, free);
  const freeRow = freePage.match(new RegExp(`<tr data-period="${last}">[\\s\\S]*?</tr>`))?.[0];
  assert.ok(freeRow, "no row for last month");
  const cells = (row: string) =>
    [...row.matchAll(/<td[^>]*>([\s\S]*?)<\/td>/g)].map((m) => m[1].replace(/<[^>]+>/g, ""));
  assert.deepEqual(cells(freeRow), ["640", "1,000", "$0.00", "$0.00", "Paid"]);
  assert.doesNotMatch(freePage, /No invoices yet/);

  const proPage = await usagePage(server, pro);
  const rows = [...proPage.matchAll(/<tr data-period="([\d-]+)">([\s\S]*?)<\/tr>/g)];
  assert.deepEqual(rows.map((r) => r[1]), [last, before], "newest first");
  assert.deepEqual(cells(rows[0][2]), ["3", "0", "$0.0001", "$0.0003", "Due"]);
  assert.deepEqual(cells(rows[1][2]), ["123,456", "0", "$0.0001", "$12.35", "Due"]);
});

Deno.test("[usage-page] money, counts, the alert and the chart's scale", () => {
  assert.equal(formatUsd(0), "$0.00");
  assert.equal(formatUsd(0.0003), "$0.0003");
  assert.equal(formatUsd(0.0099), "$0.0099");
  assert.equal(formatUsd(0.01), "$0.01");
  assert.equal(formatUsd(12.3456), "$12.35");
  assert.equal(formatUsd(1234.5), "$1,234.50");
  assert.equal(formatCount(1234567), "1,234,567");

  const free = { plan: "free" as const, freeAllowance: 1000 };
  assert.equal(quotaAlert({ ...free, used: 799, limit: 1000 }), null);
  assert.equal(quotaAlert({ ...free, used: 10, limit: null }), null);
  assert.deepEqual(quotaAlert({ ...free, used: 800, limit: 1000 }), {
    kind: "info",
    message: "You have used 80% of this month's 1,000 webhooks.",
  });
  assert.match(quotaAlert({ ...free, used: 1000, limit: 1000 })!.message, /Upgrade to Pro/);
  assert.match(
    quotaAlert({ ...free, used: 500, limit: 500 })!.message,
    /Raise your cap \(up to 1,000\) or upgrade to Pro/,
  );

  assert.deepEqual(niceScale(0), { step: 1, top: 4 });
  assert.deepEqual(niceScale(105), { step: 25, top: 125 });
  assert.deepEqual(niceScale(1000), { step: 200, top: 1000 });
  for (const max of [1, 7, 33, 101, 999, 4321, 123_456]) {
    const { step, top } = niceScale(max);
    assert.ok(top >= max && top / step <= 5 && Number.isInteger(step), `${max}: ${step} ${top}`);
  }
});

Deno.test("[usage-page] in Chromium, a month of counters draws a bar group per day with its numbers", async () => {
  await using server = await startTestServer({ FREE_MONTHLY_LIMIT: "5000" });
  const user = await signUp(server);
  const now = new Date();
  const month = monthOf(now);
  // A month so far: every day some accepted, every fifth day some refused too.
  const expected: { day: string; accepted: number; rejected: number }[] = [];
  for (let d = 1; d <= now.getUTCDate(); d++) {
    const day = `${month}-${String(d).padStart(2, "0")}`;
    const entry = { day, accepted: 20 + ((d * 37) % 90), rejected: d % 5 === 0 ? 3 * d : 0 };
    expected.push(entry);
    await addCount(server, ["usage_day", user.id, day], entry.accepted);
    if (entry.rejected) {
      await addCount(server, ["usage_rejected_day", user.id, day], entry.rejected);
    }
  }
  const accepted = expected.reduce((sum, d) => sum + d.accepted, 0);
  const rejected = expected.reduce((sum, d) => sum + d.rejected, 0);
  await addCount(server, ["usage_month", user.id, month], accepted);
  if (rejected) await addCount(server, ["usage_rejected_month", user.id, month], rejected);
  const last = previousMonth(now);
  await addCount(server, ["usage_month", user.id, last], 640);
  await generateInvoices(server.services.kv, { period: last, freeAllowance: 5000 });

  let browser: Browser | null = null;
  let page: Page | null = null;
  const problems: string[] = [];
  try {
    browser = await launchChromium();
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    context.setDefaultTimeout(15_000);
    const [name, value] = user.cookie.split("=");
    await context.addCookies([{ name, value, url: server.url }]);
    page = await context.newPage();
    page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
    page.on("console", (message) => {
      // A refused form answers 400, which Chromium logs; anything else (a CSP refusal) counts.
      if (message.type() === "error" && !/status of 4\d\d/.test(message.text())) {
        problems.push(`console error: ${message.text()}`);
      }
    });
    await page.goto(`${server.url}/dashboard/usage`);

    const chart = page.getByRole("img", { name: /^Webhooks per day/ });
    await chart.waitFor();
    const box = await chart.boundingBox();
    assert.ok(box && box.width > 600 && box.height > 150, `chart is ${JSON.stringify(box)}`);
    const drawn = await page.locator("svg[data-testid=usage-chart] g.day").evaluateAll((groups) =>
      groups.map((g) => {
        const bar = (kind: string) => g.querySelector(`rect.${kind}`) as SVGRectElement;
        return {
          day: g.getAttribute("data-day"),
          accepted: Number(g.getAttribute("data-accepted")),
          rejected: Number(g.getAttribute("data-rejected")),
          acceptedHeight: bar("accepted").getBBox().height,
          rejectedHeight: bar("rejected").getBBox().height,
          acceptedWidth: bar("accepted").getBBox().width,
          fill: getComputedStyle(bar("accepted")).fill,
          refusedFill: getComputedStyle(bar("rejected")).fill,
        };
      })
    );
    assert.equal(drawn.length, expected.length, "one bar group per day so far");
    assert.deepEqual(
      drawn.map(({ day, accepted, rejected }) => ({ day, accepted, rejected })),
      expected,
    );
    // Heights follow the numbers on one scale; the bars are visible and coloured by the sheet.
    const scale = drawn[0].acceptedHeight / drawn[0].accepted;
    for (const d of drawn) {
      assert.ok(Math.abs(d.acceptedHeight - d.accepted * scale) < 0.01, `${d.day} accepted`);
      assert.ok(Math.abs(d.rejectedHeight - d.rejected * scale) < 0.01, `${d.day} refused`);
      assert.ok(d.acceptedWidth > 10, `${d.day} is ${d.acceptedWidth}px wide`);
      assert.notEqual(d.fill, d.refusedFill);
      assert.notEqual(d.fill, "rgb(0, 0, 0)", "the stylesheet colours the bars");
    }
    const description = await page.locator("#chart-desc").textContent();
    assert.ok(
      description?.includes(`${formatCount(accepted)} accepted and ${formatCount(rejected)}`),
      description ?? "",
    );

    // The same numbers as a table, one click away.
    await page.getByText("Numbers per day").click();
    const rows = page.locator(".chart-numbers tbody tr");
    assert.equal(await rows.count(), expected.length);
    assert.deepEqual(
      await rows.last().locator("td").allTextContents(),
      [formatCount(expected.at(-1)!.accepted), formatCount(expected.at(-1)!.rejected)],
    );

    assert.equal(await page.getByTestId("accepted").textContent(), formatCount(accepted));
    assert.equal(await page.getByTestId("refused").textContent(), formatCount(rejected));
    assert.equal(await page.getByTestId("cost").textContent(), "$0.00");
    const invoice = page.locator(`tr[data-period="${last}"]`);
    assert.match(await invoice.innerText(), /640[\s\S]*5,000[\s\S]*\$0\.00[\s\S]*Paid/);

    // The cap form in the browser: refused next to the field, then saved.
    await page.getByLabel("Cap (webhooks a month)").fill("9000");
    await page.getByRole("button", { name: "Save cap" }).click();
    await page.getByText("the Free plan allows at most 5000 webhooks a month").waitFor();
    assert.equal(await page.getByLabel("Cap (webhooks a month)").inputValue(), "9000");
    await page.getByLabel("Cap (webhooks a month)").fill("4000");
    await page.getByRole("button", { name: "Save cap" }).click();
    await page.getByText("Your monthly cap is now 4,000 webhooks").waitFor();
    assert.equal(await page.getByTestId("limit").textContent(), "4,000");
    assert.deepEqual(problems, [], "the page reported errors");
  } catch (error) {
    if (page) await saveScreenshot(page, "usage page chart");
    if (problems.length) console.error(problems.join("\n"));
    throw error;
  } finally {
    await browser?.close();
  }
});
