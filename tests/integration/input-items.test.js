'use strict';
// input_items pages are cached per normalized query: limit, order, after,
// include[] sorted with defaults made explicit (limit=20, order=desc).
const test = require('node:test');
const assert = require('node:assert/strict');
const h = require('../lib/harness');

const FIVE = ['one', 'two', 'three', 'four', 'five'].map((t) => ({ role: 'user', content: t }));

test('input_items pages: MISS then HIT; different after is a different page', async () => {
	await h.withStack({}, async ({ up, px }) => {
		const id = up.seed({ input: FIVE });
		const ids = up.get(id).inputItems.map((it) => it.id);
		const p = `/v1/responses/${id}/input_items`;
		const get = (q) => h.request(`${px.url}${p}${q}`);

		const a1 = await get('?limit=2&order=asc');
		assert.equal(a1.status, 200, a1.body);
		h.assertXCache(a1, 'MISS', 'first page');
		assert.match(a1.headers['content-type'], /^application\/json/);
		const page1 = a1.json();
		assert.equal(page1.object, 'list');
		assert.deepEqual(page1.data.map((d) => d.id), ids.slice(0, 2));
		assert.equal(page1.has_more, true);

		const a2 = await get('?limit=2&order=asc');
		h.assertXCache(a2, 'HIT', 'same page again');
		assert.equal(a2.body, a1.body);
		assert.equal(up.count('GET', p), 1);

		const b1 = await get(`?limit=2&order=asc&after=${page1.last_id}`);
		assert.equal(b1.status, 200);
		h.assertXCache(b1, 'MISS', 'page after last_id');
		assert.deepEqual(b1.json().data.map((d) => d.id), ids.slice(2, 4));
		assert.equal(up.count('GET', p), 2);

		const b2 = await get(`?after=${page1.last_id}&order=asc&limit=2`);
		h.assertXCache(b2, 'HIT', 'same page, parameters in another order');
		assert.equal(b2.body, b1.body);

		const a3 = await get('?order=asc&limit=2');
		h.assertXCache(a3, 'HIT', 'order=asc&limit=2 vs limit=2&order=asc');
		assert.equal(a3.body, a1.body);
		assert.equal(up.count('GET', p), 2);

		const c1 = await get(`?limit=2&order=asc&after=${ids[3]}`);
		h.assertXCache(c1, 'MISS', 'a third after');
		assert.deepEqual(c1.json().data.map((d) => d.id), [ids[4]]);
		assert.equal(c1.json().has_more, false);
		assert.equal(up.count('GET', p), 3);
	});
});

test('input_items defaults are explicit in the key: limit=20 and order=desc', async () => {
	await h.withStack({}, async ({ up, px }) => {
		const id = up.seed({ input: FIVE });
		const p = `/v1/responses/${id}/input_items`;
		const get = (q) => h.request(`${px.url}${p}${q}`);

		const d0 = await get('');
		assert.equal(d0.status, 200, d0.body);
		h.assertXCache(d0, 'MISS', 'default page');
		assert.equal(d0.json().data.length, 5);
		assert.equal(d0.json().data[0].id, up.get(id).inputItems[4].id, 'default order is desc');

		for (const q of ['?limit=20', '?order=desc', '?limit=20&order=desc', '?order=desc&limit=20']) {
			const r = await get(q);
			assert.equal(r.status, 200);
			h.assertXCache(r, 'HIT', q);
			assert.equal(r.body, d0.body, q);
		}
		assert.equal(up.count('GET', p), 1);

		const asc = await get('?order=asc');
		h.assertXCache(asc, 'MISS', 'order=asc is another key');
		const l5 = await get('?limit=5');
		h.assertXCache(l5, 'MISS', 'limit=5 is another key');
		assert.equal(up.count('GET', p), 3);
	});
});

test('input_items entries are separate from the response entry', async () => {
	await h.withStack({}, async ({ up, px }) => {
		const id = up.seed({ input: FIVE });
		const r = await h.request(`${px.url}/v1/responses/${id}`);
		h.assertXCache(r, 'MISS', 'response');
		const i = await h.request(`${px.url}/v1/responses/${id}/input_items`);
		h.assertXCache(i, 'MISS', 'input_items after the response was cached');
		assert.equal(i.json().object, 'list');
		h.assertXCache(await h.request(`${px.url}/v1/responses/${id}`), 'HIT', 'response again');
		h.assertXCache(await h.request(`${px.url}/v1/responses/${id}/input_items`), 'HIT', 'input_items again');
	});
});
