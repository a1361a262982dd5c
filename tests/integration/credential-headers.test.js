'use strict';
// With a credential holding the upstream key, no client header reaches the
// upstream as its Authorization: not the client's own, a second one, odd
// casing, Proxy-Authorization, Basic, api-key, nor a chunked request's
// trailer (which adds no header at all), on any route; a header line that
// breaks the syntax is refused with a 400.  OpenAI-Organization and OpenAI-Project: the client's are
// forwarded unless the credential sets its own.
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const h = require('../lib/harness');
const { head, chunked, CREATE_BODY, watchUpstream } = require('../lib/hostile');

function keyFile(key = 'sk-real-upstream') {
	const f = path.join(h.tmpdir(), 'upstream.key');
	fs.writeFileSync(f, `${key}\n`, { mode: 0o600 });
	return f;
}

test("no client header can override the credential's Authorization", async () => {
	await h.withStack({ upstream: { requireKey: 'sk-real-upstream' }, proxy: { keyFile: keyFile() } }, async ({ up, px }) => {
		const w = watchUpstream(up);
		const n = CREATE_BODY.length;
		const variants = {
			'own Authorization': ['Authorization: Bearer client-a1'],
			'two Authorization headers': ['Authorization: Bearer client-b1', 'Authorization: Bearer client-b2'],
			'odd casing': ['aUtHoRiZaTiOn: Bearer client-c1'],
			'upper case only': ['AUTHORIZATION: Bearer client-d1'],
			'no client Authorization, Proxy-Authorization': ['Proxy-Authorization: Bearer client-e1'],
			'Basic scheme': ['Authorization: Basic Y2xpZW50LWY6eA=='],
			'an empty Authorization then a real one': ['Authorization:', 'Authorization: Bearer client-i1'],
			'Azure-style api-key headers': ['api-key: client-j1', 'X-Api-Key: client-j2'],
		};
		for (const [what, lines] of Object.entries(variants)) {
			const before = w.raw.length;
			const r = await h.rawRequest(px.port, head(px.port, 'POST', '/v1/responses', [
				...lines, 'Content-Type: application/json', `Content-Length: ${n}`, 'Connection: close',
			]) + CREATE_BODY);
			assert.equal(r.status, 200, `${what}: ${r.status} ${r.body.slice(0, 200)}`);
			assert.equal(w.raw.length, before + 1, `${what}: not forwarded once`);
			const raw = w.raw[before];
			const auth = [];
			for (let i = 0; i < raw.length; i += 2) {
				if (/^(proxy-)?authorization$/i.test(raw[i])) auth.push(`${raw[i]}: ${raw[i + 1]}`);
			}
			assert.deepEqual(auth, ['Authorization: Bearer sk-real-upstream'], `${what}: upstream authorization headers`);
			assert.ok(!raw.join('\n').includes('client-'), `${what}: a client credential reached the upstream: ${JSON.stringify(raw)}`);
		}
		// Header lines that break the syntax are refused outright (RFC 9112 5.1, 5.2).
		const refused = {
			'space before the colon': ['Authorization : Bearer client-g1'],
			'obs-fold continuation': ['Authorization: Bearer client-h1', ' client-h2'],
		};
		for (const [what, lines] of Object.entries(refused)) {
			const before = w.raw.length;
			const r = await h.rawRequest(px.port, head(px.port, 'POST', '/v1/responses', [
				...lines, 'Content-Type: application/json', `Content-Length: ${n}`, 'Connection: close',
			]) + CREATE_BODY);
			h.assertOpenAIError(r, 400, what);
			assert.equal(w.raw.length, before, `${what}: forwarded`);
		}
		// The same on the other routes.
		const id = up.seed();
		for (const [m, p] of [['GET', `/v1/responses/${id}`], ['GET', `/v1/responses/${id}/input_items`],
			['POST', `/v1/responses/${id}/cancel`], ['DELETE', `/v1/responses/${id}`]]) {
			const before = w.raw.length;
			await h.rawRequest(px.port, head(px.port, m, p, [
				'Authorization: Bearer client-k1', 'aUTHORIZATION: Bearer client-k2', 'Proxy-Authorization: Bearer client-k3',
				...(m === 'POST' ? ['Content-Length: 0'] : []), 'Connection: close',
			]));
			assert.equal(w.raw.length, before + 1, `${m} ${p}: not forwarded once`);
			const raw = w.raw[before];
			assert.ok(!raw.join('\n').includes('client-'), `${m} ${p}: a client credential reached the upstream: ${JSON.stringify(raw)}`);
			assert.equal(up.requests[up.requests.length - 1].headers.authorization, 'Bearer sk-real-upstream', `${m} ${p}`);
		}
		assert.deepEqual(w.clientErrors, []);
	});
});

test("a chunked request's trailer cannot add Authorization or other forwarded headers", async () => {
	await h.withStack({ upstream: { requireKey: 'sk-real-upstream' }, proxy: { keyFile: keyFile() } }, async ({ up, px }) => {
		const w = watchUpstream(up);
		const b = Buffer.from(CREATE_BODY);
		const r = await h.rawRequest(px.port, head(px.port, 'POST', '/v1/responses', [
			'Content-Type: application/json', 'Transfer-Encoding: chunked', 'Connection: close',
		]) + `${b.length.toString(16)}\r\n${CREATE_BODY}\r\n0\r\n` +
			'Authorization: Bearer client-trailer\r\nOpenAI-Organization: org-trailer\r\nX-Stainless-Trail: trailer\r\n\r\n');
		assert.equal(r.status, 200, r.body);
		const raw = w.raw[0];
		assert.ok(raw, 'not forwarded');
		const flat = raw.join('\n');
		assert.ok(!flat.includes('client-trailer'), `trailer Authorization forwarded: ${JSON.stringify(raw)}`);
		assert.ok(!flat.includes('org-trailer'), `trailer OpenAI-Organization forwarded: ${JSON.stringify(raw)}`);
		assert.ok(!flat.includes('X-Stainless-Trail') && !/x-stainless-trail/i.test(flat), `trailer X-Stainless-Trail forwarded: ${JSON.stringify(raw)}`);
	});
});

test("OpenAI-Organization / OpenAI-Project: when no credential sets them, the client's are forwarded", async () => {
	const hdrs = { 'openai-organization': 'org-client', 'openai-project': 'proj_client' };
	for (const proxy of [{}, { keyFile: keyFile() }]) {
		await h.withStack({ proxy }, async ({ up, px }) => {
			const mode = proxy.keyFile ? 'key file without organization/project' : 'pass-through';
			const c = await h.request(`${px.url}/v1/responses`, { method: 'POST', headers: hdrs, body: { model: 'gpt-4o', input: 'org' } });
			assert.equal(c.status, 200, c.body);
			const id = c.json().id;
			const g = await h.request(`${px.url}/v1/responses/${id}?include[]=x`, { headers: hdrs });
			assert.equal(g.status, 200, g.body);
			for (const r of up.requests) {
				assert.equal(r.headers['openai-organization'], 'org-client', `${mode}: ${r.method} ${r.url}`);
				assert.equal(r.headers['openai-project'], 'proj_client', `${mode}: ${r.method} ${r.url}`);
			}
		});
	}
});

test("a credential's organization/project override the client's", async () => {
	const kf = keyFile('sk-cred');
	const config = `[credential default]\nkey_file = ${kf}\norganization = org-cred\nproject = proj_cred\n`;
	await h.withStack({ upstream: { requireKey: 'sk-cred' }, proxy: { config } }, async ({ up, px }) => {
		const c = await h.request(`${px.url}/v1/responses`, {
			method: 'POST',
			headers: { 'openai-organization': 'org-client', 'OpenAI-Project': 'proj_client' },
			body: { model: 'gpt-4o', input: 'org' },
		});
		assert.equal(c.status, 200, c.body);
		const u = up.requests[0];
		assert.equal(u.headers['openai-organization'], 'org-cred');
		assert.equal(u.headers['openai-project'], 'proj_cred');
		assert.ok(!JSON.stringify(u.headers).includes('client'), `client values reached the upstream: ${JSON.stringify(u.headers)}`);
	});
});
