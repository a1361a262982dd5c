'use strict';
// Owner records cannot be flushed by another client: with a small cache and
// unknown_owner = allow, one client creating many responses evicts only its
// own oldest owner records, never another's; and an id this proxy created
// whose record was evicted is never taken for one "created elsewhere": it
// is refused (404) to every client, not opened to all.
const test = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const h = require('../lib/harness');

const sha = (s) => crypto.createHash('sha256').update(s).digest('hex');
const bearer = (t) => ({ authorization: `Bearer ${t}` });

test('a flood of one client\'s creates never opens another client\'s responses', { timeout: 120000 }, async () => {
	const dir = h.tmpdir();
	const f = path.join(dir, 'k');
	fs.writeFileSync(f, 'sk-upstream\n', { mode: 0o600 });
	const config = `[server]\nunknown_owner = allow\n
[cache]\nmax_size = 256k\n
[credential team]\nkey_file = ${f}\n
[client alice]\ntoken_sha256 = ${sha('tok-alice')}\ncredential = team\n
[client mallory]\ntoken_sha256 = ${sha('tok-mallory')}\ncredential = team\n
[client eve]\ntoken_sha256 = ${sha('tok-eve')}\ncredential = team\n`;
	await h.withStack({ proxy: { config } }, async ({ up, px }) => {
		const create = async (tok, input) => {
			const r = await h.request(`${px.url}/v1/responses`, { method: 'POST', headers: bearer(tok), body: { model: 'gpt-4o', input } });
			assert.equal(r.status, 200, r.body);
			return r.json().id;
		};
		const alices = [];
		for (let i = 0; i < 3; i++) alices.push(await create('tok-alice', `alice ${i}`));
		const mallorys = [];
		const agent = new (require('node:http').Agent)({ keepAlive: true, maxSockets: 4 });
		for (let i = 0; i < 1200; i += 4) {
			const batch = await Promise.all([0, 1, 2, 3].map((j) => h.request(`${px.url}/v1/responses`,
				{ method: 'POST', agent, headers: bearer('tok-mallory'), body: { model: 'gpt-4o', input: `m ${i + j}` } })));
			for (const r of batch) mallorys.push(r.json().id);
		}
		agent.destroy();
		// Alice's records are all still there: only she reads her ids.
		for (const id of alices) {
			h.assertOpenAIError(await h.request(`${px.url}/v1/responses/${id}`, { headers: bearer('tok-mallory') }), 404, 'mallory reads alice\'s id');
			h.assertOpenAIError(await h.request(`${px.url}/v1/responses/${id}`, { headers: bearer('tok-eve') }), 404, 'eve reads alice\'s id');
			assert.equal((await h.request(`${px.url}/v1/responses/${id}`, { headers: bearer('tok-alice') })).status, 200, 'alice reads her own');
		}
		// Mallory's oldest records were evicted: those ids are refused to
		// everyone, never "created elsewhere" and so open to all.
		const first = mallorys[0];
		const r = await h.request(`${px.url}/v1/responses/${first}`, { headers: bearer('tok-eve') });
		h.assertOpenAIError(r, 404, 'eve reads mallory\'s first id, whose record was evicted');
		h.assertOpenAIError(await h.request(`${px.url}/v1/responses/${first}`, { headers: bearer('tok-mallory') }), 404,
			'mallory\'s own first id: its record is gone, so it was evicted, and it fails closed');
		assert.equal((await h.request(`${px.url}/v1/responses/${mallorys[mallorys.length - 1]}`, { headers: bearer('tok-mallory') })).status, 200,
			'mallory reads her newest');
		// An id the upstream has that was never created here is still
		// "created elsewhere": unknown_owner = allow opens it.
		const elsewhere = up.seed();
		assert.equal((await h.request(`${px.url}/v1/responses/${elsewhere}`, { headers: bearer('tok-eve') })).status, 200, 'an id created elsewhere');
	});
});
