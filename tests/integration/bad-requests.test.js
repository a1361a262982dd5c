'use strict';
// Requests the proxy answers itself, in the OpenAI error shape, without ever
// calling the upstream: bad ids, unknown routes, wrong methods, bad
// input_items queries, oversized bodies, WebSocket upgrades.
const test = require('node:test');
const assert = require('node:assert/strict');
const h = require('../lib/harness');

/* Send a request line verbatim (no client-side normalisation). */
function raw(px, method, target, extra = '') {
	return h.rawRequest(px.port,
		`${method} ${target} HTTP/1.1\r\nHost: 127.0.0.1:${px.port}\r\nAuthorization: Bearer sk-test\r\n${extra}Connection: close\r\n\r\n`);
}

test('bad response ids are rejected with 400 before reaching the upstream', async () => {
	await h.withStack({}, async ({ up, px }) => {
		const bad = ['resp_a.b', 'resp%2Fx', 'resp%2fx', 'resp%00x', '..', 'resp_%2E%2E', 'resp x'.replace(' ', '%20'), 'r'.repeat(129)];
		for (const id of bad) {
			for (const suffix of ['', '/input_items']) {
				const r = await raw(px, 'GET', `/v1/responses/${id}${suffix}`);
				h.assertOpenAIError(r, 400, `GET /v1/responses/${id.slice(0, 20)}${suffix}`);
			}
			const d = await raw(px, 'DELETE', `/v1/responses/${id}`);
			h.assertOpenAIError(d, 400, `DELETE /v1/responses/${id.slice(0, 20)}`);
			const c = await raw(px, 'POST', `/v1/responses/${id}/cancel`, 'Content-Length: 0\r\n');
			h.assertOpenAIError(c, 400, `POST /v1/responses/${id.slice(0, 20)}/cancel`);
		}
		assert.equal(up.requests.length, 0, `upstream saw: ${up.requests.map((r) => r.method + ' ' + r.url).join(', ')}`);
	});
});

test('an id of exactly 128 characters is accepted and forwarded', async () => {
	await h.withStack({}, async ({ up, px }) => {
		const id = 'resp_' + 'a'.repeat(123);
		assert.equal(id.length, 128);
		const r = await h.request(`${px.url}/v1/responses/${id}`);
		assert.equal(r.status, 404, 'the upstream does not know it');
		assert.equal(up.count('GET', `/v1/responses/${id}`), 1, 'forwarded');
	});
});

test('unknown routes: 404; wrong methods: 405; all OpenAI-shaped, none forwarded', async () => {
	await h.withStack({}, async ({ up, px }) => {
		for (const p of ['/foo', '/', '/v1', '/v1/', '/v2/responses/resp_1', '/v10/models']) {
			const r = await h.request(px.url + p);
			h.assertOpenAIError(r, 404, `GET ${p}`);
		}
		const put = await h.request(`${px.url}/v1/responses/resp_1`, { method: 'PUT', body: { a: 1 } });
		h.assertOpenAIError(put, 405, 'PUT /v1/responses/resp_1');
		const patch = await h.request(`${px.url}/v1/responses/resp_1`, { method: 'PATCH', body: { a: 1 } });
		h.assertOpenAIError(patch, 405, 'PATCH /v1/responses/resp_1');
		const gc = await h.request(`${px.url}/v1/responses/resp_1/cancel`);
		h.assertOpenAIError(gc, 405, 'GET /v1/responses/resp_1/cancel');
		const pi = await h.request(`${px.url}/v1/responses/resp_1/input_items`, { method: 'POST', body: {} });
		h.assertOpenAIError(pi, 405, 'POST /v1/responses/resp_1/input_items');
		const dc = await h.request(`${px.url}/v1/responses`, { method: 'DELETE' });
		h.assertOpenAIError(dc, 405, 'DELETE /v1/responses');
		for (const m of ['PUT', 'PATCH', 'OPTIONS', 'TRACE']) {
			const o = await h.request(`${px.url}/v1/responses/resp_1/other`, { method: m });
			h.assertOpenAIError(o, 405, `${m} on another /v1/responses path`);
		}
		assert.equal(up.requests.length, 0, `upstream saw: ${up.requests.map((r) => r.method + ' ' + r.url).join(', ')}`);
	});
});

test('bad input_items queries: 400, not forwarded', async () => {
	await h.withStack({}, async ({ up, px }) => {
		for (const q of ['limit=0', 'limit=101', 'limit=-1', 'limit=abc', 'order=sideways']) {
			const r = await h.request(`${px.url}/v1/responses/resp_1/input_items?${q}`);
			h.assertOpenAIError(r, 400, `input_items?${q}`);
		}
		assert.equal(up.requests.length, 0, `upstream saw: ${up.requests.map((r) => r.method + ' ' + r.url).join(', ')}`);
	});
});

test('a body over max_body_size: 413, not forwarded', async () => {
	await h.withStack({ proxy: { config: '[server]\nmax_body_size = 1024\n' } }, async ({ up, px }) => {
		const big = JSON.stringify({ model: 'gpt-4o', input: 'x'.repeat(4096) });
		const r = await h.request(`${px.url}/v1/responses`, { method: 'POST', body: big, headers: { 'content-type': 'application/json' } });
		h.assertOpenAIError(r, 413, 'POST of 4 KB with max_body_size 1024');
		assert.equal(up.requests.length, 0);
		// A small body still goes through.
		const ok = await h.request(`${px.url}/v1/responses`, { method: 'POST', body: { model: 'gpt-4o', input: 'hi' } });
		assert.equal(ok.status, 200, ok.body);
		assert.equal(up.requests.length, 1);
	});
});

test('a WebSocket upgrade anywhere but /v1/responses gets 426 Upgrade Required at once, OpenAI-shaped', async () => {
	await h.withStack({}, async ({ up, px }) => {
		// GET /v1/responses is WebSocket mode's (websocket.test.js).
		for (const p of ['/v1/responses?x=1', '/v1/responses/resp_abc', '/v1/chat/completions', '/nowhere']) {
			const r = await raw(px, 'GET', p,
				'Upgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n');
			const j = h.assertOpenAIError(r, 426, `WebSocket upgrade on ${p}`);
			assert.equal(j.error.code, 'websocket_not_supported');
		}
		const r = await raw(px, 'GET', '/v1/responses/resp_abc',
			'Upgrade: WebSocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n');
		h.assertOpenAIError(r, 426, 'Upgrade: WebSocket (any case)');
		// With the Connection: Upgrade token as a browser sends it.
		const r2 = await h.rawRequest(px.port,
			`GET /v1/responses/resp_abc HTTP/1.1\r\nHost: 127.0.0.1:${px.port}\r\nAuthorization: Bearer sk-test\r\n` +
			'Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n');
		h.assertOpenAIError(r2, 426, 'WebSocket upgrade (Connection: Upgrade)');
		assert.equal(up.requests.length, 0);
	});
});
