'use strict';
// A finished response is fetched from the upstream once and then served from
// the cache: MISS then HIT, identical bodies, ETag/Age on the hit, 304 on a
// matching If-None-Match.
const test = require('node:test');
const assert = require('node:assert/strict');
const h = require('../lib/harness');

test('GET of a finished response: MISS, then HIT from the cache with one upstream GET', async () => {
	await h.withStack({}, async ({ up, px }) => {
		// Created directly at the upstream: the proxy has never seen it.
		const id = up.seed({ input: 'hello' });
		const p = `/v1/responses/${id}`;

		const r1 = await h.request(px.url + p);
		assert.equal(r1.status, 200, r1.body);
		h.assertXCache(r1, 'MISS', 'first GET');
		assert.match(r1.headers['content-type'], /^application\/json/);
		assert.equal(r1.json().id, id);
		assert.equal(r1.json().status, 'completed');

		const r2 = await h.request(px.url + p);
		assert.equal(r2.status, 200, r2.body);
		h.assertXCache(r2, 'HIT', 'second GET');
		assert.equal(r2.body, r1.body, 'the hit serves the same body');
		assert.match(r2.headers['content-type'], /^application\/json/);
		assert.ok(r2.headers.etag, 'ETag on the hit');
		assert.match(r2.headers.etag, /^"[^"]+"$/, 'a strong ETag (quoted, no W/)');
		assert.ok(r2.headers.age !== undefined, 'Age on the hit');
		assert.match(r2.headers.age, /^\d+$/, 'Age is a number of seconds');

		assert.equal(up.count('GET', p), 1, 'exactly one upstream GET');

		// If-None-Match with the hit's ETag: 304, no body, still no upstream call.
		const r3 = await h.request(px.url + p, { headers: { 'if-none-match': r2.headers.etag } });
		assert.equal(r3.status, 304, `If-None-Match ${r2.headers.etag}: ${r3.status} ${r3.body.slice(0, 200)}`);
		assert.equal(r3.body, '', '304 has no body');
		assert.equal(up.count('GET', p), 1, 'the 304 came from the cache');

		// A non-matching If-None-Match gets the full body.
		const r4 = await h.request(px.url + p, { headers: { 'if-none-match': '"not-the-etag"' } });
		assert.equal(r4.status, 200);
		assert.equal(r4.body, r1.body);
		assert.equal(r1.headers.etag, r2.headers.etag, 'the miss that stored the entry carried its ETag');
	});
});

test('a miss whose fetched answer matches If-None-Match gets 304 too', async () => {
	await h.withStack({}, async ({ up, px }) => {
		const id = up.seed();
		const p = `/v1/responses/${id}`;
		// Learn the ETag; then ask a second proxy with an empty cache.
		const etag = (await h.request(px.url + p)).headers.etag;
		assert.ok(etag);
		await h.withStack({}, async ({ up: up2, px: px2 }) => {
			up2.store.set(id, up.get(id));
			const r = await h.request(px2.url + p, { headers: { 'if-none-match': etag } });
			assert.equal(r.status, 304, `${r.status} ${r.body.slice(0, 200)}`);
			h.assertXCache(r, 'MISS', 'fetched, then matched');
			assert.equal(r.headers.etag, etag);
			assert.equal(up2.count('GET', p), 1);
		});
	});
});

test('POST /v1/responses is forwarded (BYPASS) and its final answer is cached for later GETs', async () => {
	await h.withStack({}, async ({ up, px }) => {
		const c = await h.request(px.url + '/v1/responses', {
			method: 'POST', body: { model: 'gpt-4o', input: 'tell me something' },
		});
		assert.equal(c.status, 200, c.body);
		h.assertXCache(c, 'BYPASS', 'create');
		assert.match(c.headers['content-type'], /^application\/json/);
		assert.ok(c.headers['x-request-id'], 'x-request-id passed back');
		const created = c.json();
		assert.equal(created.status, 'completed');
		assert.ok(c.body.length > 2500, `a ~3 KB body (${c.body.length})`);
		assert.equal(up.count('POST', '/v1/responses'), 1);

		const p = `/v1/responses/${created.id}`;
		const g1 = await h.request(px.url + p);
		const g2 = await h.request(px.url + p);
		assert.equal(g1.status, 200);
		assert.equal(g2.status, 200);
		assert.deepEqual(g1.json(), created);
		assert.equal(g2.body, g1.body);
		h.assertXCache(g2, 'HIT', 'second GET');
		// DESIGN.md: a non-stream create's final body (store not false) is
		// written to the cache, so no GET needs the upstream at all.
		h.assertXCache(g1, 'HIT', 'first GET after a cached create');
		assert.equal(up.count('GET', p), 0, 'no upstream GET after a cached create');
	});
});

test('store:false responses are never cached', async () => {
	await h.withStack({}, async ({ up, px }) => {
		const c = await h.request(px.url + '/v1/responses', {
			method: 'POST', body: { model: 'gpt-4o', input: 'ephemeral', store: false },
		});
		assert.equal(c.status, 200, c.body);
		const id = c.json().id;
		// The upstream does not keep it, so every GET is its 404.
		for (let i = 0; i < 2; i++) {
			const g = await h.request(`${px.url}/v1/responses/${id}`);
			assert.equal(g.status, 404, `GET #${i + 1}: ${g.status} ${g.body.slice(0, 200)}`);
			assert.notEqual(g.headers['x-cache'], 'HIT');
		}
		assert.equal(up.count('GET', `/v1/responses/${id}`), 2);
	});
});

test('a create with include[] is not cached as the plain GET entry', async () => {
	await h.withStack({}, async ({ up, px }) => {
		const c = await h.request(px.url + '/v1/responses', {
			method: 'POST', body: { model: 'gpt-4o', input: 'x', include: ['reasoning.encrypted_content'] },
		});
		assert.equal(c.status, 200, c.body);
		const p = `/v1/responses/${c.json().id}`;
		const g = await h.request(px.url + p);
		assert.equal(g.status, 200);
		h.assertXCache(g, 'MISS', 'plain GET after a create with include');
		assert.equal(up.count('GET', p), 1);
	});
});
