'use strict';
// Upstream errors pass through unchanged and are never cached; an unreachable
// upstream is a 502, a hanging one a 504, both in the OpenAI error shape; a
// gzip upstream is decoded before the answer is served or cached.
const test = require('node:test');
const assert = require('node:assert/strict');
const h = require('../lib/harness');

test('upstream 500 passes through with its body and is not cached', async () => {
	await h.withStack({}, async ({ up, px }) => {
		const id = up.seed();
		const p = `/v1/responses/${id}`;
		const body = { error: { message: 'The server had an error while processing your request. Sorry about that!', type: 'server_error', param: null, code: null } };
		up.failNext(500, body);
		const r1 = await h.request(px.url + p);
		assert.equal(r1.status, 500, r1.body);
		assert.deepEqual(r1.json(), body);
		assert.match(r1.headers['content-type'], /^application\/json/);
		assert.notEqual(r1.headers['x-cache'], 'HIT');
		assert.equal(up.count('GET', p), 1, 'the proxy did not retry on its own');

		const r2 = await h.request(px.url + p);
		assert.equal(r2.status, 200, 'the 500 was not cached');
		h.assertXCache(r2, 'MISS', 'GET after the 500');
		assert.equal(up.count('GET', p), 2);
	});
});

test('upstream 429 passes through with retry-after and its body, not cached', async () => {
	await h.withStack({}, async ({ up, px }) => {
		const id = up.seed();
		const p = `/v1/responses/${id}`;
		const body = { error: { message: 'Rate limit reached for gpt-4o on requests per min (RPM): Limit 3, Used 3, Requested 1.', type: 'requests', param: null, code: 'rate_limit_exceeded' } };
		up.failNext(429, body, { 'retry-after': '7', 'x-ratelimit-remaining-requests': '0' });
		const r1 = await h.request(px.url + p);
		assert.equal(r1.status, 429);
		assert.equal(r1.headers['retry-after'], '7');
		assert.equal(r1.headers['x-ratelimit-remaining-requests'], '0');
		assert.deepEqual(r1.json(), body);
		assert.notEqual(r1.headers['x-cache'], 'HIT');

		const r2 = await h.request(px.url + p);
		assert.equal(r2.status, 200);
		assert.equal(up.count('GET', p), 2, 'the 429 was not cached');
	});
});

test('upstream 404 passes through and is not cached', async () => {
	await h.withStack({}, async ({ up, px }) => {
		const p = '/v1/responses/resp_unknown123';
		for (let i = 1; i <= 2; i++) {
			const r = await h.request(px.url + p);
			const j = h.assertOpenAIError(r, 404, `GET #${i}`);
			assert.equal(j.error.message, "Response with id 'resp_unknown123' not found.");
			assert.equal(up.count('GET', p), i);
		}
	});
});

test('upstream down: 502 in the OpenAI error shape, quickly', async () => {
	const port = await h.freePort();
	await h.withStack({ proxy: { upstream: `http://127.0.0.1:${port}` } }, async ({ up, px }) => {
		const t0 = Date.now();
		const r = await h.request(`${px.url}/v1/responses/resp_abc`, { timeout: 8000 });
		const ms = Date.now() - t0;
		h.assertOpenAIError(r, 502, 'GET with the upstream down');
		assert.ok(ms < 5000, `answered in ${ms} ms`);
		assert.equal(up.requests.length, 0);

		const c = await h.request(`${px.url}/v1/responses`, {
			method: 'POST', body: { model: 'gpt-4o', input: 'x' }, timeout: 8000,
		});
		h.assertOpenAIError(c, 502, 'POST with the upstream down');
		assert.equal(c.headers['x-should-retry'], undefined, 'never reached the upstream: a retry is safe');

		// Every request failing alike does not flood the error log.
		const t1 = Date.now();
		for (let i = 0; i < 60; i++) {
			h.assertOpenAIError(await h.request(`${px.url}/v1/responses/resp_${i}`, { timeout: 8000 }), 502, `GET #${i}`);
		}
		const secs = Math.ceil((Date.now() - t1) / 1000);
		const lines = px.stderr().split('\n').filter((l) => /upstream GET \/v1\/responses\/resp_/.test(l)).length;
		assert.ok(lines <= secs + 2, `${lines} warning lines for 60 failures in ${secs} s`);
	});
});

test('upstream hang: 504 in the OpenAI error shape after the configured timeout', async () => {
	await h.withStack({
		upstream: { hang: true },
		proxy: { config: '[upstream]\ntimeout = 1\nconnect_timeout = 1\n' },
	}, async ({ up, px }) => {
		const t0 = Date.now();
		const r = await h.request(`${px.url}/v1/responses/resp_abc`, { timeout: 8000 });
		const ms = Date.now() - t0;
		h.assertOpenAIError(r, 504, 'GET with the upstream hanging');
		assert.ok(ms >= 900, `not before the 1 s timeout (${ms} ms)`);
		assert.ok(ms < 4000, `well within 4 s (${ms} ms)`);
		assert.equal(up.count('GET', '/v1/responses/resp_abc'), 1, 'the request did reach the upstream');
		assert.equal(r.headers['x-should-retry'], undefined, 'a GET may be retried');

		// A create that reached the upstream and timed out may have been
		// generated: the SDKs are told not to send it again.
		const c = await h.request(`${px.url}/v1/responses`, { method: 'POST', body: { model: 'gpt-4o', input: 'x' }, timeout: 8000 });
		h.assertOpenAIError(c, 504, 'POST with the upstream hanging');
		assert.equal(c.headers['x-should-retry'], 'false');

		// Not cached: once the upstream answers again, the GET succeeds.
		up.hang = false;
		const id = up.seed();
		const g = await h.request(`${px.url}/v1/responses/${id}`);
		assert.equal(g.status, 200);
	});
});

test('gzip upstream: the client gets decoded JSON, and the entry is cached decoded', async () => {
	await h.withStack({ upstream: { gzip: true } }, async ({ up, px }) => {
		const id = up.seed({ input: 'squeeze me' });
		const p = `/v1/responses/${id}`;
		const hdrs = { 'accept-encoding': 'gzip, deflate' };	// what the SDK sends
		const r1 = await h.request(px.url + p, { headers: hdrs });
		assert.equal(r1.status, 200);
		assert.equal(r1.headers['content-encoding'], undefined, 'no content-encoding towards the client');
		assert.equal(r1.json().id, id, 'a decoded JSON body');
		assert.match(r1.headers['content-type'], /^application\/json/);
		if (r1.headers['content-length'] !== undefined) {
			assert.equal(Number(r1.headers['content-length']), r1.raw.length, 'content-length of the decoded body');
		}
		h.assertXCache(r1, 'MISS', 'first GET');

		const r2 = await h.request(px.url + p, { headers: hdrs });
		assert.equal(r2.status, 200);
		h.assertXCache(r2, 'HIT', 'second GET');
		assert.equal(r2.headers['content-encoding'], undefined);
		assert.equal(r2.body, r1.body);
		assert.equal(up.count('GET', p), 1);

		// A create through a gzip upstream is decoded too.
		const c = await h.request(px.url + '/v1/responses', {
			method: 'POST', headers: hdrs, body: { model: 'gpt-4o', input: 'x' },
		});
		assert.equal(c.status, 200);
		assert.equal(c.headers['content-encoding'], undefined);
		assert.equal(c.json().status, 'completed');
	});
});

test('an upstream answer too large to hold (> 64 MiB) gets 502, and the proxy stays healthy', async () => {
	await h.withStack({}, async ({ up, px }) => {
		const id = up.seed();
		const p = `/v1/responses/${id}`;
		up.failNext(200, { id, object: 'response', status: 'completed', pad: 'x'.repeat(65 * 1024 * 1024) });
		const r = await h.request(px.url + p, { timeout: 20000 });
		assert.equal(r.status, 502, 'answered, not left hanging');
		h.assertOpenAIError(r);
		const r2 = await h.request(px.url + p);
		assert.equal(r2.status, 200, 'the next request is served');
	});
});
