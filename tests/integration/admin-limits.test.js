'use strict';
// The admin listener has limits of its own, not evhttp's unlimited
// defaults: headers over 8 KiB and bodies over 4 KiB are refused, and a
// connection that stalls is closed after client_timeout, as a client's is.
const test = require('node:test');
const assert = require('node:assert/strict');
const h = require('../lib/harness');

const get = (p, lines = []) =>
	`GET ${p} HTTP/1.1\r\nHost: admin\r\n${lines.map((l) => l + '\r\n').join('')}Connection: close\r\n\r\n`;

test('admin: headers over 8 KiB and a body over 4 KiB are refused; within them, served', async () => {
	await h.withStack({}, async ({ px }) => {
		const port = Number(new URL(px.adminUrl).port);
		const small = await h.exchange(port, get('/healthz', [`X-Filler: ${'a'.repeat(4 * 1024)}`]));
		assert.equal(small.status, 200, `4 KiB of headers: ${small.raw.slice(0, 200)}`);

		const big = await h.exchange(port, get('/healthz', [`X-Filler: ${'a'.repeat(16 * 1024)}`]));
		// Refused with an answer, or a reset that beat it: never served.
		assert.ok([0, 400, 413, 431].includes(big.status), `16 KiB of headers: status ${big.status}`);
		assert.ok(big.closed, '16 KiB of headers: the connection is closed');

		const body = 'x'.repeat(8 * 1024);
		const del = await h.exchange(port, `DELETE /cache/resp_1 HTTP/1.1\r\nHost: admin\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
		assert.ok([0, 413].includes(del.status), `an 8 KiB body: status ${del.status}: ${del.raw.slice(0, 200)}`);
		assert.ok(del.closed, 'an 8 KiB body: the connection is closed');

		const after = await h.request(`${px.adminUrl}/healthz`, { headers: { authorization: null }, agent: false });
		assert.equal(after.status, 200, 'the admin listener serves on');
	});
});

test('admin: a connection that stops mid-request is closed after client_timeout (1 s), not evhttp\'s 50 s', async () => {
	await h.withStack({ proxy: { config: '[server]\nclient_timeout = 1\n' } }, async ({ px }) => {
		const port = Number(new URL(px.adminUrl).port);
		const stalled = await h.exchange(port, 'GET /metrics HTTP/1.1\r\nHost: adm', { waitMs: 6000 });
		assert.ok(stalled.closed, `a stalled request's connection is still open after ${stalled.ms} ms`);
		assert.ok(stalled.ms >= 500, `closed after ${stalled.ms} ms: before its timeout`);

		const idle = await h.exchange(port, '', { waitMs: 6000 });
		assert.ok(idle.closed, `an idle connection is still open after ${idle.ms} ms`);
		assert.equal(idle.status, 0);
	});
});
