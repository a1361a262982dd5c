'use strict';
// Which headers cross the proxy: the SDK's request headers go upstream,
// hop-by-hop ones do not; the upstream's informative answer headers come back.
const test = require('node:test');
const assert = require('node:assert/strict');
const h = require('../lib/harness');

test('request headers: forwarded ones arrive, hop-by-hop ones do not', async () => {
	await h.withStack({}, async ({ up, px }) => {
		const r = await h.request(`${px.url}/v1/responses?beta=true`, {
			method: 'POST',
			body: { model: 'gpt-4o', input: 'headers' },
			headers: {
				'user-agent': 'OpenAI/JS 6.49.0',
				accept: 'application/json',
				'openai-beta': 'responses=v1',
				'idempotency-key': 'idem-123',
				'x-stainless-lang': 'js',
				'x-stainless-retry-count': '0',
				'openai-organization': 'org-abc',
				'openai-project': 'proj_abc',
				te: 'trailers',
				'proxy-authorization': 'Basic Zm9vOmJhcg==',
				'keep-alive': 'timeout=5',
			},
		});
		assert.equal(r.status, 200, r.body);
		assert.equal(up.requests.length, 1);
		const u = up.requests[0];
		assert.equal(u.url, '/v1/responses?beta=true', 'the query (?beta=true) is forwarded');
		assert.deepEqual(JSON.parse(u.body), { model: 'gpt-4o', input: 'headers' }, 'the body is forwarded');
		assert.match(u.headers['content-type'] || '', /^application\/json/);
		assert.equal(u.headers['user-agent'], 'OpenAI/JS 6.49.0');
		assert.equal(u.headers['openai-beta'], 'responses=v1');
		assert.equal(u.headers['idempotency-key'], 'idem-123');
		assert.equal(u.headers['x-stainless-lang'], 'js');
		assert.equal(u.headers['x-stainless-retry-count'], '0');
		assert.equal(u.headers['openai-organization'], 'org-abc');
		assert.equal(u.headers['openai-project'], 'proj_abc');
		assert.equal(u.headers.te, undefined, 'TE is hop-by-hop');
		assert.equal(u.headers['proxy-authorization'], undefined, 'Proxy-Authorization is hop-by-hop');
		assert.equal(u.headers['keep-alive'], undefined, 'Keep-Alive is hop-by-hop');
	});
});

test('answer headers: x-request-id, openai-* and x-ratelimit-* come back; X-Cache is set', async () => {
	await h.withStack({}, async ({ up, px }) => {
		const id = up.seed();
		up.failNext(200, { id, object: 'response', status: 'in_progress', output: [] }, {
			'x-ratelimit-limit-requests': '500',
			'x-ratelimit-remaining-tokens': '29000',
			'x-ratelimit-reset-requests': '120ms',
		});
		const r = await h.request(`${px.url}/v1/responses/${id}`);
		assert.equal(r.status, 200);
		assert.match(r.headers['x-request-id'] || '', /^req_\d+$/);
		assert.equal(r.headers['openai-version'], '2020-10-01');
		assert.match(r.headers['openai-processing-ms'] || '', /^\d+$/);
		assert.equal(r.headers['x-ratelimit-limit-requests'], '500');
		assert.equal(r.headers['x-ratelimit-remaining-tokens'], '29000');
		assert.equal(r.headers['x-ratelimit-reset-requests'], '120ms');
		h.assertXCache(r, 'MISS', 'GET of a non-final response');

		for (const [m, p, b] of [
			['POST', '/v1/responses', { model: 'gpt-4o', input: 'x' }],
			['POST', '/v1/responses/input_tokens', { model: 'gpt-4o', input: 'x' }],
			['GET', `/v1/responses/${id}/input_items`],
			['DELETE', `/v1/responses/${id}`],
		]) {
			const a = await h.request(px.url + p, { method: m, body: b });
			assert.equal(a.status, 200, `${m} ${p}: ${a.body.slice(0, 200)}`);
			assert.ok(a.headers['x-cache'], `X-Cache on ${m} ${p}`);
			assert.match(a.headers['x-request-id'] || '', /^req_\d+$/, `x-request-id on ${m} ${p}`);
			assert.match(a.headers['content-type'] || '', /^application\/json/, `content-type on ${m} ${p}`);
		}
	});
});

test('an absolute-form request line goes to the configured upstream, path and query only', async () => {
	await h.withStack({}, async ({ up, px }) => {
		const id = up.seed();
		const r = await h.rawRequest(px.port, `GET http://elsewhere.invalid/v1/responses/${id}?include%5B%5D=a HTTP/1.1\r\nHost: elsewhere.invalid\r\nAuthorization: Bearer sk-test\r\nConnection: close\r\n\r\n`);
		assert.equal(r.status, 200);
		const got = up.requests.filter((q) => q.method === 'GET');
		assert.equal(got.length, 1);
		assert.equal(got[0].url, `/v1/responses/${id}?include%5B%5D=a`);
	});
});
