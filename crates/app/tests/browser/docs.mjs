// Drives the system Chromium through the server's /docs and /redoc pages with
// every request to another origin blocked, and prints what happened as one
// JSON object on standard output: for each page what it showed and the
// requests that were blocked. The app crate's `docs` test runs it and checks
// the result.
//
// usage: node docs.mjs BASE_URL FULL_NAME SCREENSHOT_DIR
//   BASE_URL        the running server, e.g. http://127.0.0.1:8123
//   FULL_NAME       the employee to create through Swagger UI's "Try it out"
//   SCREENSHOT_DIR  where docs.png and redoc.png are written
// The browser is $CHROMIUM, or /usr/bin/chromium.

import { chromium } from 'playwright-core';

const [base, fullName, screenshots] = process.argv.slice(2);
if (!base || !fullName || !screenshots) {
  console.error('usage: node docs.mjs BASE_URL FULL_NAME SCREENSHOT_DIR');
  process.exit(2);
}
const origin = new URL(base).origin;
const timeout = 30_000;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  // Without these, Chromium itself calls home at start (not the page).
  args: [
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ],
});
const blocked = [];
const result = { pageErrors: [] };
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  await context.route('**/*', (route) => {
    const url = route.request().url();
    if (new URL(url).origin === origin) {
      return route.continue();
    }
    blocked.push(url);
    return route.abort('blockedbyclient');
  });
  const page = await context.newPage();
  page.setDefaultTimeout(timeout);
  page.on('pageerror', (error) => result.pageErrors.push(String(error)));

  result.swagger = await tryItOut(page);
  result.swagger.blocked = blocked.splice(0);
  await page.screenshot({ path: `${screenshots}/docs.png` });

  result.redoc = await readRedoc(page);
  result.redoc.blocked = blocked.splice(0);
  await page.screenshot({ path: `${screenshots}/redoc.png` });
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));

// POST /employees/ through Swagger UI: expand, "Try it out", body, "Execute".
async function tryItOut(page) {
  await page.goto(`${base}/docs`);
  const title = await page.locator('.information-container .title').innerText();
  const operation = page.locator('.opblock-post', { hasText: '/employees/' }).first();
  await operation.locator('.opblock-summary').click();
  await operation.getByRole('button', { name: 'Try it out' }).click();
  const body = operation.locator('textarea.body-param__text');
  await body.fill(JSON.stringify({ full_name: fullName, position: 'tester' }));
  await operation.getByRole('button', { name: 'Execute' }).click();
  const live = operation.locator('.live-responses-table .response');
  await live.first().waitFor();
  const status = (await live.locator('.response-col_status').first().innerText()).trim();
  const response = await live.locator('.response-col_description pre').first().innerText();
  return { title, status, response };
}

// /redoc shows the API's title and its operations.
async function readRedoc(page) {
  await page.goto(`${base}/redoc`);
  const heading = page.locator('h1').first();
  await heading.waitFor();
  const operation = page.locator('h2', { hasText: 'Create an employee' }).first();
  await operation.waitFor();
  return {
    title: await heading.innerText(),
    operation: await operation.innerText(),
  };
}
