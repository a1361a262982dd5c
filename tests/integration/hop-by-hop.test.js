'use strict';
// Hop-by-hop headers stay on the client's connection: its Connection,
// Keep-Alive, TE, Trailer, Transfer-Encoding (the body arrives de-chunked),
// Proxy-*, Upgrade and HTTP2-Settings (and no protocol switch), and any
// header the client's Connection header names never reach the upstream.
const test = require('node:test');
const assert = require('node:assert/strict');
const h = require('../lib/harness');
const { head, chunked, CREATE_BODY, upSaw, watchUpstream } = require('../lib/hostile');

test('hop-by-hop headers from the client never reach the upstream', async () => {
	await h.withStack({}, async ({ up, px }) => {
		const w = watchUpstream(up);
		const hop = [
			'Connection: keep-alive', 'Keep-Alive: timeout=5, max=100', 'TE: trailers, deflate',
			'Trailer: X-Stainless-Trail', 'Proxy-Authorization: Basic Zm9vOmJhcg==',
			'Proxy-Connection: keep-alive', 'Proxy-Foo: bar',
		];
		// A chunked body: Transfer-Encoding must not be forwarded either.
		const r = await h.rawRequest(px.port, head(px.port, 'POST', '/v1/responses', [
			'Authorization: Bearer sk-test', 'Content-Type: application/json', 'Transfer-Encoding: chunked', ...hop,
		]) + chunked(CREATE_BODY));
		assert.equal(r.status, 200, r.body);
		// The same headers on a GET, with Content-Length framing.
		const id = JSON.parse(r.body).id;
		const g = await h.rawRequest(px.port, head(px.port, 'GET', `/v1/responses/${id}?include[]=x`, ['Authorization: Bearer sk-test', ...hop]));
		assert.equal(g.status, 200, g.body);
		assert.equal(up.requests.length, 2, `upstream saw: ${upSaw(up)}`);
		assert.deepEqual(JSON.parse(up.requests[0].body), JSON.parse(CREATE_BODY), 'the de-chunked body arrived intact');
		for (const [i, u] of up.requests.entries()) {
			const what = `${u.method} ${u.url}`;
			for (const name of ['keep-alive', 'te', 'trailer', 'upgrade', 'proxy-authorization', 'proxy-connection', 'proxy-foo']) {
				assert.equal(u.headers[name], undefined, `${what}: ${name} reached the upstream`);
			}
			assert.ok(!/chunked/i.test(u.headers['transfer-encoding'] || '') || i === 0 && u.headers['content-length'] === undefined,
				`${what}: transfer-encoding ${u.headers['transfer-encoding']}`);
			assert.doesNotMatch(u.headers.connection || '', /keep-alive.*timeout|trailer|proxy/i);
			assert.ok(!w.raw[i].join('\n').includes('Zm9vOmJhcg'), `${what}: Proxy-Authorization value forwarded`);
		}
	});
});

test('a non-WebSocket Upgrade (h2c, TLS) is declined: served as HTTP/1.1, never forwarded', async () => {
	await h.withStack({}, async ({ up, px }) => {
		for (const [upg, conn] of [['h2c', 'Upgrade, HTTP2-Settings'], ['TLS/1.2', 'Upgrade'], ['foo', 'keep-alive']]) {
			const r = await h.rawRequest(px.port, head(px.port, 'POST', '/v1/responses', [
				'Authorization: Bearer sk-test', 'Content-Type: application/json', `Content-Length: ${CREATE_BODY.length}`,
				`Upgrade: ${upg}`, `Connection: ${conn}`, 'HTTP2-Settings: AAMAAABkAAQAAP__',
			]) + CREATE_BODY);
			// Declined by serving it as HTTP/1.1 (curl --http2 asks for h2c).
			assert.equal(r.status, 200, `Upgrade: ${upg}: status ${r.status}`);
		}
		for (const u of up.requests) {
			assert.equal(u.headers.upgrade, undefined, `${u.method} ${u.url}: upgrade forwarded`);
			assert.equal(u.headers['http2-settings'], undefined, `${u.method} ${u.url}: HTTP2-Settings forwarded`);
		}
	});
});

test('headers named in the client\'s Connection header are hop-by-hop: not forwarded', async () => {
	await h.withStack({}, async ({ up, px }) => {
		const r = await h.rawRequest(px.port, head(px.port, 'POST', '/v1/responses', [
			'Authorization: Bearer sk-test', 'Content-Type: application/json', `Content-Length: ${CREATE_BODY.length}`,
			'Connection: keep-alive, X-Stainless-Hop, OpenAI-Beta', 'X-Stainless-Hop: 1', 'OpenAI-Beta: hop',
		]) + CREATE_BODY);
		assert.equal(r.status, 200, r.body);
		const u = up.requests[0];
		assert.equal(u.headers['x-stainless-hop'], undefined, 'X-Stainless-Hop (named in Connection) reached the upstream');
		assert.equal(u.headers['openai-beta'], undefined, 'OpenAI-Beta (named in Connection) reached the upstream');
	});
});
