// Screenshots of the built documentation site in a real headless Chromium (scripts/docs_screenshots.sh).
// Usage: node docs_screenshots.mjs <base url> <out dir> <page path>...
// Per page: one 1280x900 screenshot of the first screen (of the anchor's section for path#anchor), and a JSON line with what the browser saw
// (title, whether Material's header and search rendered, API objects, raw Sphinx roles left in the text,
// failed requests other than the unreachable Google Fonts, console errors, page errors).
import chromium from '@sparticuz/chromium';
import puppeteer from 'puppeteer-core';
import fs from 'fs';

const [base, outDir, ...paths] = process.argv.slice(2);
fs.mkdirSync(outDir, {recursive: true});
const browser = await puppeteer.launch({executablePath: await chromium.executablePath(), args: chromium.args,
                                        headless: 'shell', defaultViewport: {width: 1280, height: 900}});
let problems = 0;
for (const path of paths) {
  const page = await browser.newPage();
  const failed = [], errors = [];
  await page.setRequestInterception(true);  // only the site itself: external fonts cannot be reached offline
  page.on('request', r => r.url().startsWith(base) || r.url().startsWith('data:') ? r.continue() : r.abort());
  page.on('requestfailed', r => { if (r.url().startsWith(base)) failed.push(r.url()); });
  page.on('response', r => { if (r.status() >= 400) failed.push(`${r.url()} HTTP ${r.status()}`); });
  page.on('console', m => { if (m.type() === 'error' && !m.text().includes('ERR_FAILED')) errors.push(m.text()); });
  page.on('pageerror', e => errors.push(String(e)));
  const response = await page.goto(base + path, {waitUntil: 'networkidle0', timeout: 60000});
  const seen = await page.evaluate(() => ({
    title: document.title,
    header: !!document.querySelector('.md-header'), search: !!document.querySelector('.md-search'),
    apiObjects: document.querySelectorAll('.doc.doc-object').length,
    rawRoles: (document.body.innerText.match(/:(func|class|meth|mod|data|attr):`/g) || []).length,
  }));
  const file = `${outDir}/${path.replace(/\/(#|$)/, '$1').replace(/[\/#]/g, '-').replace(/\./g, '_') || 'home'}.png`;
  await page.screenshot({path: file});
  const ok = response.status() < 400 && seen.header && seen.search && !seen.rawRoles && !failed.length && !errors.length;
  problems += ok ? 0 : 1;
  console.log(JSON.stringify({path, status: response.status(), screenshot: file, ...seen, failed, errors, ok}));
  await page.close();
}
console.log(`browser ${await browser.version()}`);
await browser.close();
process.exit(problems ? 1 : 0);
