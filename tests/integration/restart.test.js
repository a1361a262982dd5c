'use strict';
// The cache is on disk: a new proxy on the same cache directory serves what
// the old one cached, with no upstream call at all.
const test = require('node:test');
const assert = require('node:assert/strict');
const h = require('../lib/harness');

test('cached entries survive a restart on the same cache dir', async () => {
	const cacheDir = h.tmpdir();
	let id, body, etag, itemsBody;

	await h.withStack({ proxy: { cacheDir } }, async ({ up, px }) => {
		id = up.seed({ input: ['first', 'second'] });
		const g1 = await h.request(`${px.url}/v1/responses/${id}`);
		h.assertXCache(g1, 'MISS', 'GET before restart');
		const g2 = await h.request(`${px.url}/v1/responses/${id}`);
		h.assertXCache(g2, 'HIT', 'GET again before restart');
		body = g2.body;
		etag = g2.headers.etag;
		const i1 = await h.request(`${px.url}/v1/responses/${id}/input_items?order=asc`);
		assert.equal(i1.status, 200);
		itemsBody = i1.body;
	});	// stop() asserted a clean exit 0

	// A fresh upstream that knows nothing.
	await h.withStack({ proxy: { cacheDir } }, async ({ up, px }) => {
		const g = await h.request(`${px.url}/v1/responses/${id}`);
		assert.equal(g.status, 200, g.body);
		h.assertXCache(g, 'HIT', 'GET after restart');
		assert.equal(g.body, body);
		assert.equal(g.headers.etag, etag, 'same ETag after restart');
		const i = await h.request(`${px.url}/v1/responses/${id}/input_items?order=asc`);
		h.assertXCache(i, 'HIT', 'input_items after restart');
		assert.equal(i.body, itemsBody);
		const n = await h.request(`${px.url}/v1/responses/${id}`, { headers: { 'if-none-match': etag } });
		assert.equal(n.status, 304);
		assert.equal(up.requests.length, 0, 'the new upstream saw no request');
	});
});
