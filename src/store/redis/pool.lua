#!lua name=session_pool_@VERSION@
-- The Redis store's code, one Redis Functions library loaded once by each server (its name carries
-- a hash of this file, so servers of different versions each call their own). Every call on a pool
-- is one FCALL of its one function, atomic on the server.
-- ARGV[1] names the operation; ARGV[2..6] are the same for every call:
--   2 tag        the key prefix with its braces, `{session-pool}`: every key starts with it
--   3 pool       the pool's name ("" for calls on every pool)
--   4 max        --max-sessions
--   5 retention  --retired-retention-secs, in microseconds
--   6 bound      how many due timers (expiries, lease ends, purges) one call handles at most
-- and the operation's own arguments follow from ARGV[7]. KEYS[1] is the pool's key (or the pool
-- list's), declared for routing only: every key shares the tag, so all sit in one slot.
--
-- Keys (T is the tag, P a pool name, G the pool's generation: a pool deleted and made again gets
-- a new one, so the old sessions can be dropped in the background, not in the call that deleted it):
--   T:pools            sorted set of pool names (score 0), for listing in name order and --max-pools
--   T:held             sessions held by every pool together, against --max-sessions
--   T:gen              the last generation handed out
--   T:purge            sorted set "P\tG\tid" by purge time: retired sessions of every pool
--   T:due              sorted set of pool names by a time at or before the pool's first expiry or
--                      lease end (early when those left first; late only for sessions an older
--                      version of this code added, until the walk files them): the pools the
--                      sweep visits, so its cost does not grow with the number of pools
--   T:walk             the pool the sweep's walk over every pool reached (see ops.tick)
--   T:graves           list of "P\tG" whose keys the sweep still has to drop
--   T:layout           the version of this layout (LAYOUT): a store written in another is refused
--   T:p:P              the pool: hash of g (generation), ca (created at), cv (config version), cfg
--                      (its config as JSON, read by Rust only), the fields sessions are created
--                      with (mps, ma, mu, me, d, b, pt, px, pc), n (sessions) and us (usable)
--   T:s:P:G:ids        sorted set of every session id (score 0), for listing in id order
--   T:s:P:G:free       sorted set of usable sessions not leased, by expiry: those not expired yet
--                      are the ranks from ZCOUNT(-inf, now) on, and the uniform pick is a random
--                      rank among them (O(log n), whether or not the due expiries were handled)
--   T:s:P:G:exp        sorted set of usable sessions by expiry
--   T:s:P:G:lease      sorted set of leased sessions by lease end
--   T:s:P:G:h:ID       the session: hash of c (created), e (expires), ma mu me d b (its settings),
--                      u (usage), s (error score), r ra (retired reason and time), l lu (lease id
--                      and end), p (proxy URL), ud (user data JSON), j (cookie jar), v (version)
-- Instants are microseconds since the Unix epoch, whole milliseconds when the clock made them.

-- The call's arguments and clock, set by `entry` at the start of each call (a call runs alone).
local ARGV, op, T, POOL, MAX, RETENTION, BOUND, NOW, EVENTS


local function num(x)
  return string.format('%.0f', x)
end

-- Something the replica counts in its metrics: a kind (c created, a acquired, x exhausted, g good,
-- b bad, r:REASON retired) and the pool it happened in.
local function event(kind, K)
  local key = kind .. '\t' .. K.name
  EVENTS[key] = (EVENTS[key] or 0) + 1
end


local function counted()
  local list = {}
  for key, count in pairs(EVENTS) do
    list[#list + 1] = key
    list[#list + 1] = count
  end
  return list
end

-- A refusal: a code (POOL_NOT_FOUND ...), a detail, and what the call counted before it refused
-- (what it changed until then stays: applying the clock).
local function err(code, detail)
  return { 'err', code, detail or '', counted() }
end

-- A pool's keys -------------------------------------------------------------------------------

local function pool_key(name)
  return T .. ':p:' .. name
end

local function keys_of(name, gen)
  local base = T .. ':s:' .. name .. ':' .. gen .. ':'
  return {
    name = name, gen = gen, meta = pool_key(name), base = base,
    ids = base .. 'ids', free = base .. 'free', exp = base .. 'exp', lease = base .. 'lease',
  }
end

local function open(name)
  local gen = redis.call('HGET', pool_key(name), 'g')
  if not gen then return nil end
  return keys_of(name, gen)
end

local function hkey(K, id)
  return K.base .. 'h:' .. id
end

-- Arguments as field/value pairs from ARGV[from], `count` of them.
local function pairs_at(from, count)
  local list = {}
  for i = from, from + 2 * count - 1 do list[#list + 1] = ARGV[i] end
  return list
end

-- Sessions --------------------------------------------------------------------------------------
-- The health rules below (unusable_reason, use, retire_now, the blocked status in ops.mark) are
-- `Session`'s in src/session/mod.rs, written again because they must run inside Redis: change
-- both together. tests/api/stores_agree.rs drives both stores with the same calls and fails when
-- their answers part.

local function codes_of(csv)
  local set = {}
  for code in string.gmatch(csv or '', '[^,]+') do set[code] = true end
  return set
end

-- Why the record says the session can no longer be used (blocked, then usage, then expiry).
local function unusable_reason(h)
  if tonumber(h.s) >= tonumber(h.me) then return 'blocked' end
  if tonumber(h.u) >= tonumber(h.mu) then return 'max_usage_count' end
  if NOW >= tonumber(h.e) then return 'expired' end
  return nil
end

-- A hash as a table of its fields, or nil when the key does not exist.
local function hash_at(key)
  local flat = redis.call('HGETALL', key)
  if #flat == 0 then return nil end
  local h = {}
  for i = 1, #flat, 2 do h[flat[i]] = flat[i + 1] end
  return h
end

local function load(K, id)
  return hash_at(hkey(K, id))
end

local function purge_member(K, id)
  return K.name .. '\t' .. K.gen .. '\t' .. id
end

-- Retires a usable session: it leaves the candidates and its lease ends; its purge is queued.
local function retire(K, id, h, reason, at)
  local key = hkey(K, id)
  redis.call('HSET', key, 'r', reason, 'ra', at)
  redis.call('HDEL', key, 'l', 'lu')
  h.r, h.ra, h.l, h.lu = reason, at, nil, nil
  redis.call('ZREM', K.free, id)
  redis.call('ZREM', K.exp, id)
  redis.call('ZREM', K.lease, id)
  redis.call('HINCRBY', K.meta, 'us', -1)
  redis.call('ZADD', T .. ':purge', tonumber(at) + RETENTION, purge_member(K, id))
  event('r:' .. reason, K)
end

-- Ends a session's lease; a usable one becomes a candidate again.
local function end_lease(K, id, h)
  redis.call('HDEL', hkey(K, id), 'l', 'lu')
  h.l, h.lu = nil, nil
  redis.call('ZREM', K.lease, id)
  if not h.r then redis.call('ZADD', K.free, h.e, id) end
end

-- Applies the clock to one session about to be read or changed: an expiry or a lease end that is
-- due but that no drain has reached yet.
local function touch(K, id, h)
  if not h.r and NOW >= tonumber(h.e) then retire(K, id, h, 'expired', h.e) end
  if h.lu and NOW >= tonumber(h.lu) then end_lease(K, id, h) end
end

local function remove(K, id, h)
  if not h.r then redis.call('HINCRBY', K.meta, 'us', -1) end
  redis.call('DEL', hkey(K, id))
  redis.call('ZREM', K.ids, id)
  redis.call('ZREM', K.free, id)
  redis.call('ZREM', K.exp, id)
  redis.call('ZREM', K.lease, id)
  redis.call('ZREM', T .. ':purge', purge_member(K, id))
  redis.call('HINCRBY', K.meta, 'n', -1)
  redis.call('DECR', T .. ':held')
end

-- The session `id` as the clock leaves it now, or nil: its expiry and lease end applied, and gone
-- once past its retention (purged here when no purge reached it yet, as the memory store would).
local function current(K, id)
  local h = load(K, id)
  if not h then return nil end
  touch(K, id, h)
  if h.r and tonumber(h.ra) + RETENTION <= NOW then
    remove(K, id, h)
    return nil
  end
  return h
end

-- Tells the sweep that the pool has an expiry or a lease end at `at` (T:due keeps the earliest).
local function note_due(K, at)
  redis.call('ZADD', T .. ':due', 'LT', at, K.name)
end

-- Puts a session whose hash is written and whose place under --max-sessions is counted into the
-- pool's indexes, by its state.
local function index(K, id, h)
  redis.call('ZADD', K.ids, 0, id)
  redis.call('HINCRBY', K.meta, 'n', 1)
  if h.r then
    redis.call('ZADD', T .. ':purge', tonumber(h.ra) + RETENTION, purge_member(K, id))
    return
  end
  redis.call('HINCRBY', K.meta, 'us', 1)
  redis.call('ZADD', K.exp, h.e, id)
  if h.lu then
    redis.call('ZADD', K.lease, h.lu, id)
    note_due(K, num(math.min(tonumber(h.e), tonumber(h.lu))))
  else
    redis.call('ZADD', K.free, h.e, id)
    note_due(K, h.e)
  end
  touch(K, id, h)
end

local function held()
  return tonumber(redis.call('GET', T .. ':held') or '0')
end

local function generate_id(seed, i)
  local hex = redis.sha1hex(seed .. ':' .. i)
  -- The form of a UUID v4: version nibble 4, variant 10xx.
  local v = tonumber(string.sub(hex, 17, 17), 16) % 4 + 1
  local variant = string.sub('89ab', v, v)
  return string.sub(hex, 1, 12) .. '4' .. string.sub(hex, 14, 16) .. variant .. string.sub(hex, 18, 32)
end

-- The `i`-th new id of a call seeded with `seed`, one the pool does not hold.
local function fresh_id(K, seed, i)
  local id, attempt = generate_id(seed, i), 0
  while redis.call('EXISTS', hkey(K, id)) == 1 do
    attempt = attempt + 1
    id = generate_id(seed .. ':' .. attempt, i)
  end
  return id
end

local function replace_all(text, pattern, with)
  local out, from = {}, 1
  while true do
    local i, j = string.find(text, pattern, from, true)
    if not i then break end
    out[#out + 1] = string.sub(text, from, i - 1)
    out[#out + 1] = with
    from = j + 1
  end
  out[#out + 1] = string.sub(text, from)
  return table.concat(out)
end

-- The pool's next sticky proxy for a session it creates: the template, else the list round-robin.
local function proxy_for(K, meta, id)
  if meta.pt and meta.pt ~= '' then return replace_all(meta.pt, '{session_id}', id) end
  if meta.px and meta.px ~= '' then
    local urls = {}
    for url in string.gmatch(meta.px, '[^\n]+') do urls[#urls + 1] = url end
    local cursor = tonumber(meta.pc or '0')
    meta.pc = num((cursor + 1) % #urls)
    redis.call('HSET', K.meta, 'pc', meta.pc)
    return urls[cursor % #urls + 1]
  end
  return nil
end

local function meta_of(K)
  return hash_at(K.meta) or {}
end

-- A new session with the pool's settings, or with `given` (a table of fields) over them.
local function new_session(K, meta, id, given)
  local h = { c = num(NOW), u = '0', s = '0', v = '0' }
  for _, f in ipairs({ 'ma', 'mu', 'me', 'd', 'b' }) do h[f] = meta[f] end
  local explicit_proxy = false
  for f, value in pairs(given or {}) do
    if f == 'p' or f == 'np' then explicit_proxy = true end
    h[f] = value
  end
  h.np = nil
  h.e = num(NOW + math.floor(tonumber(h.ma) * 1000000 + 0.5))
  if not explicit_proxy then h.p = proxy_for(K, meta, id) end
  local flat = {}
  for f, value in pairs(h) do
    flat[#flat + 1] = f
    flat[#flat + 1] = value
  end
  redis.call('HSET', hkey(K, id), unpack(flat))
  redis.call('INCR', T .. ':held')
  index(K, id, h)
  event('c', K)
  return h
end

-- The clock -------------------------------------------------------------------------------------

-- Expiries and lease ends due in the pool, at most `bound` of each; returns whether any is left,
-- and how many it handled.
local function drain(K, bound)
  local due = redis.call('ZRANGEBYSCORE', K.exp, '-inf', num(NOW), 'LIMIT', 0, bound)
  for _, id in ipairs(due) do
    local h = load(K, id)
    if h and not h.r then retire(K, id, h, 'expired', h.e) else redis.call('ZREM', K.exp, id) end
  end
  local ended = redis.call('ZRANGEBYSCORE', K.lease, '-inf', num(NOW), 'LIMIT', 0, bound)
  for _, id in ipairs(ended) do
    local h = load(K, id)
    if h then end_lease(K, id, h) else redis.call('ZREM', K.lease, id) end
  end
  return #due == bound or #ended == bound, #due + #ended
end

-- Retired sessions of any pool past their retention, at most `bound`; returns how many.
local function purge(bound)
  local due = redis.call('ZRANGEBYSCORE', T .. ':purge', '-inf', num(NOW), 'LIMIT', 0, bound)
  for _, member in ipairs(due) do
    local name, gen, id = string.match(member, '^([^\t]*)\t([^\t]*)\t(.*)$')
    redis.call('ZREM', T .. ':purge', member)
    local K = open(name)
    if K and K.gen == gen then
      local h = load(K, id)
      if h then remove(K, id, h) end
    end
  end
  return #due
end

-- Drops up to `bound` keys of deleted pools; returns how many.
local function bury(bound)
  local dropped = 0
  while dropped < bound do
    local grave = redis.call('LINDEX', T .. ':graves', 0)
    if not grave then break end
    local name, gen = string.match(grave, '^([^\t]*)\t(.*)$')
    local K = keys_of(name, gen)
    local ids = redis.call('ZRANGE', K.ids, 0, bound - dropped - 1)
    for _, id in ipairs(ids) do redis.call('UNLINK', hkey(K, id)) end
    if #ids > 0 then redis.call('ZREM', K.ids, unpack(ids)) end
    dropped = dropped + #ids
    if #ids == 0 then
      redis.call('UNLINK', K.free, K.exp, K.lease, K.ids)
      redis.call('LPOP', T .. ':graves')
      dropped = dropped + 1
    end
  end
  return dropped
end

-- Pools -----------------------------------------------------------------------------------------

-- Writes the empty pool `name` with the configuration fields `fields` (a flat list) under a new
-- generation and lists it.
local function init_pool(name, fields)
  local gen = redis.call('INCR', T .. ':gen')
  redis.call('HSET', pool_key(name), 'g', gen, 'ca', num(NOW), 'cv', '1', 'n', '0', 'us', '0', 'pc', '0',
    unpack(fields))
  redis.call('ZADD', T .. ':pools', 0, name)
  return keys_of(name, tostring(gen))
end

-- Creates the pool `name` with the configuration fields `fields` (a flat list), unless
-- --max-pools (`max_pools`) is reached.
local function create_pool(name, fields, max_pools)
  if redis.call('ZCARD', T .. ':pools') >= max_pools then
    return nil, err('LIMIT', 'the server holds its maximum of ' .. max_pools .. ' pools (--max-pools)')
  end
  return init_pool(name, fields)
end

-- The usable sessions of a pool whose `us` field counts `usable`, the expiries due but not
-- handled yet (`behind`) left out: `exp` holds exactly the usable sessions, by expiry.
local function usable_now(K, usable, behind)
  if not behind then return usable end
  return usable - redis.call('ZCOUNT', K.exp, '-inf', num(NOW))
end

-- The pool's counts (sessions, usable, leased), after a bounded drain (`behind` is what a drain
-- the caller ran answered; without it, one runs here). Exact, except that while timers are overdue
-- beyond the drain (a mass expiry, until the sweep catches up) a leased session that expired
-- meanwhile may still count as leased (never more than the usable ones).
local function counts(K, behind)
  if behind == nil then behind = drain(K, BOUND) end
  local n, us = unpack(redis.call('HMGET', K.meta, 'n', 'us'))
  local leased = redis.call('ZCARD', K.lease)
  if behind then
    us = usable_now(K, tonumber(us), true)
    leased = math.min(redis.call('ZCOUNT', K.lease, '(' .. num(NOW), '+inf'), us)
    us = num(us)
  end
  return { n, us, tostring(leased) }
end

local function status(K, behind)
  local c = counts(K, behind)
  local cfg, ca = unpack(redis.call('HMGET', K.meta, 'cfg', 'ca'))
  return { K.name, cfg, ca, c[1], c[2], c[3] }
end

-- Answers ---------------------------------------------------------------------------------------

local function flat_of(h)
  local flat = {}
  for f, value in pairs(h) do
    flat[#flat + 1] = f
    flat[#flat + 1] = value
  end
  return flat
end

-- A successful answer: the time the call ran at, what it counted (event, count, ...), then `...`.
local function ok(...)
  return { 'ok', num(NOW), counted(), ... }
end

-- The session `id` of the pool, with the clock applied, or an error answer.
local function find(K, id)
  local h = current(K, id)
  if not h then return nil, err('SESSION_NOT_FOUND', id) end
  return h
end

-- The pool of this call, or an error answer; applies the clock first.
local function pool_or_err()
  local K = open(POOL)
  if not K then return nil, err('POOL_NOT_FOUND', POOL) end
  drain(K, BOUND)
  purge(BOUND)
  return K
end

-- Applies cookie jar operations at ARGV[from..]: `count` of ("put", key, cookie) or ("del", key).
-- The jar is a JSON list of [key, cookie JSON] pairs in the order the cookies were first stored.
local function apply_jar(K, id, h, from, count)
  if count == 0 then return from end
  local jar = {}
  if h.j and h.j ~= '' then jar = cjson.decode(h.j) end
  local i = from
  for _ = 1, count do
    local kind, key = ARGV[i], ARGV[i + 1]
    local at = nil
    for position, entry in ipairs(jar) do
      if entry[1] == key then at = position break end
    end
    if kind == 'put' then
      if at then jar[at][2] = ARGV[i + 2] else jar[#jar + 1] = { key, ARGV[i + 2] } end
      i = i + 3
    else
      if at then table.remove(jar, at) end
      i = i + 2
    end
  end
  if #jar == 0 then
    h.j = nil
    redis.call('HDEL', hkey(K, id), 'j')
  else
    h.j = cjson.encode(jar)
    redis.call('HSET', hkey(K, id), 'j', h.j)
  end
  h.v = tostring(redis.call('HINCRBY', hkey(K, id), 'v', 1))
  return i
end

-- After a mark: a session no longer usable retires.
local function settle(K, id, h)
  local reason = unusable_reason(h)
  if reason then retire(K, id, h, reason, num(NOW)) end
end

-- An explicit retirement (retire, a blocked status): the error score reaches the maximum.
local function retire_now(K, id, h, reason)
  h.s = string.format('%.17g', math.max(tonumber(h.s), tonumber(h.me)))
  redis.call('HSET', hkey(K, id), 's', h.s)
  retire(K, id, h, reason, num(NOW))
end

local function use(K, id, h, good)
  local score = tonumber(h.s)
  h.u = tostring(tonumber(h.u) + 1)
  if good then
    if score > 0 then score = math.max(0, score - tonumber(h.d)) end
    event('g', K)
  else
    score = score + 1
    event('b', K)
  end
  h.s = string.format('%.17g', score)
  redis.call('HSET', hkey(K, id), 'u', h.u, 's', h.s)
  settle(K, id, h)
end

-- Operations ------------------------------------------------------------------------------------

local ops = {}

-- At most this many sessions one acquire creates. A call runs alone in Redis and a new session
-- costs about 30 µs there, so a pool larger than this grows by this much an acquire; the default
-- max_pool_size (1000) fills in one.
local FILL = 1000

-- A uniform pick among the free sessions that have not expired, or nil. `free` is ordered by
-- expiry, so those are the ranks from the count of expired ones on (none when the expiries are
-- handled: `behind` is false); `random` is a whole number.
local function pick(K, random, behind)
  local expired = 0
  if behind then expired = redis.call('ZCOUNT', K.free, '-inf', num(NOW)) end
  local left = redis.call('ZCARD', K.free) - expired
  if left <= 0 then return nil end
  local rank = expired + random % left
  return redis.call('ZRANGE', K.free, rank, rank)[1]
end

-- ARGV: 7 lease microseconds ("" for none), 8 lease id, 9 seed (32 random hex digits) for the pick
-- and new ids, 10 --max-pools, 11 count of default config fields, then the fields, with which a
-- missing pool is made.
function ops.acquire()
  local K = open(POOL)
  if not K then
    local e
    K, e = create_pool(POOL, pairs_at(12, tonumber(ARGV[11])), tonumber(ARGV[10]))
    if not K then return e end
  end
  local behind = drain(K, BOUND)
  purge(BOUND)
  local size, usable = unpack(redis.call('HMGET', K.meta, 'mps', 'us'))
  local missing = math.min(tonumber(size) - usable_now(K, tonumber(usable), behind), FILL)
  if missing > 0 then
    local meta = meta_of(K)
    if held() + missing > MAX then purge(missing) end
    for i = 1, math.min(missing, MAX - held()) do
      new_session(K, meta, fresh_id(K, ARGV[9], i))
    end
  end
  local random = tonumber(string.sub(ARGV[9], 1, 12), 16) or 0
  -- Normally the first pick is taken; a candidate whose record disagrees with the indexes (a
  -- damaged store) is dropped from them and another is picked.
  for _ = 1, BOUND do
    local id = pick(K, random, behind)
    if not id then break end
    local h = current(K, id)
    if h and not h.r and not h.l then
      if ARGV[7] ~= '' then
        h.l, h.lu = ARGV[8], num(NOW + tonumber(ARGV[7]))
        redis.call('HSET', hkey(K, id), 'l', h.l, 'lu', h.lu)
        redis.call('ZREM', K.free, id)
        redis.call('ZADD', K.lease, h.lu, id)
        note_due(K, h.lu)
      end
      event('a', K)
      return ok(id, flat_of(h))
    end
    redis.call('ZREM', K.free, id)
  end
  event('x', K)
  return err('NO_SESSION')
end

-- ARGV: 7 id ("" to generate one), 8 seed, 9 --max-pools, 10 count of the session's own fields,
-- then those fields, then a count of default config fields and the fields, with which a missing
-- pool is made.
function ops.create()
  local given_count = tonumber(ARGV[10])
  local config_at = 11 + 2 * given_count
  local K = open(POOL)
  if not K then
    -- As in memory, the pool is made even when --max-sessions then refuses the session.
    local e
    K, e = create_pool(POOL, pairs_at(config_at + 1, tonumber(ARGV[config_at])), tonumber(ARGV[9]))
    if not K then return e end
  end
  drain(K, BOUND)
  purge(BOUND)
  local id = ARGV[7]
  if id == '' then
    id = fresh_id(K, ARGV[8], 0)
  elseif current(K, id) then
    return err('SESSION_EXISTS', id)
  end
  if held() >= MAX then purge(BOUND) end
  if held() >= MAX then return err('LIMIT_SESSIONS') end
  local given = {}
  for i = 11, 10 + 2 * given_count, 2 do given[ARGV[i]] = ARGV[i + 1] end
  local h = new_session(K, meta_of(K), id, given)
  return ok(id, flat_of(h))
end

function ops.get()
  local K, e = pool_or_err()
  if not K then return e end
  local h
  h, e = find(K, ARGV[7])
  if not h then return e end
  return ok(ARGV[7], flat_of(h))
end

-- How many ids a page of a listing reads at most beyond its limit, so that a filter few sessions
-- match does not read a whole large pool in one call: the page then comes back short (even
-- empty) with a cursor, and the next page goes on from there.
local LIST_SCAN = 1000

-- ARGV: 7 state (all, usable, retired, leased), 8 the id to start after ("" for the first), 9 limit.
-- Answers the page, then the id the next page starts after ("" when nothing follows).
function ops.list()
  local K, e = pool_or_err()
  if not K then return e end
  local state, limit = ARGV[7], tonumber(ARGV[9])
  local from = '-'
  if ARGV[8] ~= '' then from = '(' .. ARGV[8] end
  local page, budget, last, more = {}, limit + LIST_SCAN, '', false
  while not more do
    if budget == 0 then
      more = true
      break
    end
    local ids = redis.call('ZRANGEBYLEX', K.ids, from, '+', 'LIMIT', 0, math.min(256, budget))
    if #ids == 0 then break end
    for _, id in ipairs(ids) do
      local h = current(K, id)
      if h then
        local wanted = state == 'all' or (state == 'usable' and not h.r) or (state == 'retired' and h.r)
          or (state == 'leased' and not h.r and h.l)
        if wanted then
          if #page == limit then
            more = true
            break
          end
          page[#page + 1] = { id, flat_of(h) }
        end
      end
      last, from, budget = id, '(' .. id, budget - 1
    end
  end
  if not more then last = '' end
  return ok(page, last)
end

-- The version of a session's record for a compare-and-set: its creation time and its count of
-- writes, so that a session deleted and made again under the same id is a change too.
local function session_version(h)
  return (h.c or '') .. '.' .. (h.v or '0')
end

-- ARGV: 7 id, 8 the version read ("" for any), 9 user data JSON ("" for unchanged), 10 count of
-- jar operations, then the operations.
function ops.edit()
  local K, e = pool_or_err()
  if not K then return e end
  local id = ARGV[7]
  local h
  h, e = find(K, id)
  if not h then return e end
  if ARGV[8] ~= '' and ARGV[8] ~= session_version(h) then return err('CONFLICT') end
  if ARGV[9] ~= '' then
    h.ud = ARGV[9]
    redis.call('HSET', hkey(K, id), 'ud', h.ud)
  end
  apply_jar(K, id, h, 11, tonumber(ARGV[10]))
  if ARGV[9] ~= '' then h.v = tostring(redis.call('HINCRBY', hkey(K, id), 'v', 1)) end
  return ok(id, flat_of(h))
end

function ops.delete()
  local K, e = pool_or_err()
  if not K then return e end
  local h = current(K, ARGV[7])
  if not h then return err('SESSION_NOT_FOUND', ARGV[7]) end
  remove(K, ARGV[7], h)
  return ok()
end

-- ARGV: 7 id, 8 kind (good, bad, retire, status, none), 9 lease id ("" for none), 10 status code,
-- 11 additional blocked codes (comma-separated), 12 ignored codes, 13 mark ("1" or "0"),
-- 14 count of jar operations, then the operations. Answers the session and whether the status
-- blocked.
function ops.mark()
  local K, e = pool_or_err()
  if not K then return e end
  local id, kind = ARGV[7], ARGV[8]
  local h
  h, e = find(K, id)
  if not h then return e end
  apply_jar(K, id, h, 15, tonumber(ARGV[14]))
  local blocked = false
  if kind == 'status' then
    local code = ARGV[10]
    local ignored = codes_of(ARGV[12])
    blocked = codes_of(ARGV[11])[code] or (codes_of(h.b)[code] and not ignored[code]) or false
  end
  if not h.r then
    if kind == 'good' then
      use(K, id, h, true)
    elseif kind == 'bad' then
      use(K, id, h, false)
    elseif kind == 'retire' then
      retire_now(K, id, h, 'retired')
    elseif kind == 'status' then
      local code = tonumber(ARGV[10])
      if blocked then
        retire_now(K, id, h, 'blocked_status_code')
      elseif ARGV[13] == '1' then
        use(K, id, h, code >= 200 and code <= 399)
      end
    end
    if h.l and ARGV[9] ~= '' and h.l == ARGV[9] then end_lease(K, id, h) end
  end
  return ok(id, flat_of(h), blocked and 1 or 0)
end

-- ARGV: 7 id, 8 lease id.
function ops.release()
  local K, e = pool_or_err()
  if not K then return e end
  local id = ARGV[7]
  local h
  h, e = find(K, id)
  if not h then return e end
  if not h.r then
    if not h.l or h.l ~= ARGV[8] then return err('LEASE_MISMATCH', ARGV[8]) end
    end_lease(K, id, h)
  end
  return ok(id, flat_of(h))
end

function ops.pool()
  local K, e = pool_or_err()
  if not K then return e end
  return ok(status(K))
end

-- A page of the pools in name order: ARGV[7] pools at most after the name ARGV[8] ("" for the
-- first). Answers their statuses, the sessions held by every pool (as of this page: the counts of
-- earlier pages may have moved since), and the name the next page starts after ("" when nothing
-- follows).
function ops.pools()
  local size = tonumber(ARGV[7])
  local from = '-'
  if ARGV[8] ~= '' then from = '(' .. ARGV[8] end
  local names = redis.call('ZRANGEBYLEX', T .. ':pools', from, '+', 'LIMIT', 0, size)
  -- Expiries first, so that a session they retire past its retention is purged before counting;
  -- about BOUND timers for the whole page (the counts leave out the expiries left for later).
  local pools, budget = {}, BOUND
  for _, name in ipairs(names) do
    local K = open(name)
    if K then
      local behind = true
      if budget > 0 then
        local handled
        behind, handled = drain(K, budget)
        budget = budget - handled
      end
      pools[#pools + 1] = { K, behind }
    end
  end
  purge(BOUND)
  local list = {}
  for _, p in ipairs(pools) do list[#list + 1] = status(p[1], p[2]) end
  local last = ''
  if #names == size then last = names[#names] end
  return ok(list, tostring(held()), last)
end

-- ARGV: 7 --max-pools, 8 count of config fields, then the fields. Answers the status and whether
-- the pool was created.
function ops.put()
  local fields = pairs_at(9, tonumber(ARGV[8]))
  local K = open(POOL)
  local created = 0
  if K then
    redis.call('HSET', K.meta, 'pc', '0', unpack(fields))
    redis.call('HINCRBY', K.meta, 'cv', 1)
    -- A field the new config leaves out is gone (PUT replaces).
    for _, f in ipairs({ 'pt', 'px' }) do
      local given = false
      for i = 1, #fields, 2 do if fields[i] == f then given = true end end
      if not given then redis.call('HDEL', K.meta, f) end
    end
  else
    local e
    K, e = create_pool(POOL, fields, tonumber(ARGV[7]))
    if not K then return e end
    created = 1
  end
  drain(K, BOUND)
  purge(BOUND)
  return ok(status(K), created)
end

-- ARGV: 7 count of default config fields, then the fields (`default` is reset to them).
function ops.delete_pool()
  local K = open(POOL)
  if not K then return err('POOL_NOT_FOUND', POOL) end
  local n = tonumber(redis.call('HGET', K.meta, 'n'))
  redis.call('DECRBY', T .. ':held', n)
  redis.call('RPUSH', T .. ':graves', K.name .. '\t' .. K.gen)
  redis.call('DEL', K.meta)
  if POOL == 'default' then
    init_pool(POOL, pairs_at(8, tonumber(ARGV[7])))
  else
    redis.call('ZREM', T .. ':pools', POOL)
  end
  return ok()
end

-- A page of the pool's sessions in id order: `ARGV[7]` ids at most after the id ARGV[8] ("" for
-- the first). Answers the pool's config, the page, its generation (an export that sees it change
-- read two pools) and the id the next page starts after ("" when nothing follows).
function ops.export()
  local K, e = pool_or_err()
  if not K then return e end
  local from = '-'
  if ARGV[8] ~= '' then from = '(' .. ARGV[8] end
  local ids = redis.call('ZRANGEBYLEX', K.ids, from, '+', 'LIMIT', 0, tonumber(ARGV[7]))
  local page = {}
  for _, id in ipairs(ids) do
    local h = current(K, id)
    if h then
      page[#page + 1] = { id, flat_of(h) }
    end
  end
  local last = ''
  if #ids == tonumber(ARGV[7]) then last = ids[#ids] end
  local cfg, gen = unpack(redis.call('HMGET', K.meta, 'cfg', 'g'))
  return ok(cfg, page, gen, last)
end

-- The version of a pool's config: its generation and the count of its PUTs, so that a pool
-- deleted and made again between a read and a write is a change too.
local function config_version(K)
  return K.gen .. '.' .. redis.call('HGET', K.meta, 'cv')
end

-- The pool's config and its version (what an import resolves its sessions against), or two
-- empty strings when the pool does not exist.
function ops.config()
  local K = open(POOL)
  if not K then return ok('', '') end
  return ok(redis.call('HGET', K.meta, 'cfg'), config_version(K))
end

-- ARGV: 7 the config version the sessions were resolved against ("" when the pool did not exist),
-- 8 --max-pools, 9 count of config fields, then the fields (for a pool this call creates), then
-- the count of sessions and, for each, its id, its count of fields and the fields. All or nothing.
function ops.import()
  local config_count = tonumber(ARGV[9])
  local at = 10 + 2 * config_count
  local K = open(POOL)
  local created = 0
  if K then
    if ARGV[7] ~= config_version(K) then return err('CONFLICT') end
  else
    if ARGV[7] ~= '' then return err('CONFLICT') end
  end
  local sessions, i = {}, at + 1
  for _ = 1, tonumber(ARGV[at]) do
    local count = tonumber(ARGV[i + 1])
    sessions[#sessions + 1] = { id = ARGV[i], from = i + 2, count = count }
    i = i + 2 + 2 * count
  end
  if K then
    drain(K, BOUND)
  end
  local fresh, skipped = {}, {}
  for _, s in ipairs(sessions) do
    if K and current(K, s.id) then
      skipped[#skipped + 1] = s.id
    else
      fresh[#fresh + 1] = s
    end
  end
  if held() + #fresh > MAX then purge(math.max(1000, #fresh)) end
  if held() + #fresh > MAX then
    return err('LIMIT', 'importing ' .. #fresh .. ' sessions would pass --max-sessions (' .. math.max(0, MAX - held())
      .. ' more allowed); nothing was imported')
  end
  if not K then
    local e
    K, e = create_pool(POOL, pairs_at(10, config_count), tonumber(ARGV[8]))
    if not K then return e end
    created = 1
  end
  for _, s in ipairs(fresh) do
    local fields = pairs_at(s.from, s.count)
    redis.call('HSET', hkey(K, s.id), unpack(fields))
    redis.call('INCR', T .. ':held')
    local h = {}
    for j = 1, #fields, 2 do h[fields[j]] = fields[j + 1] end
    index(K, s.id, h)
  end
  return ok(tostring(#fresh), skipped, created)
end

-- Applies the clock to at most `bound` timers of each kind in the pool `name` (none with 0), then
-- files the pool in T:due under its first expiry or lease end left; returns how many timers it
-- handled and whether due ones are left.
local function visit(name, bound)
  local K = open(name)
  if not K then
    redis.call('ZREM', T .. ':due', name)
    return 0, false
  end
  local left, handled = false, 0
  if bound > 0 then left, handled = drain(K, bound) end
  local first
  for _, key in ipairs({ K.exp, K.lease }) do
    local at = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')[2]
    if at and (not first or tonumber(at) < tonumber(first)) then first = at end
  end
  if first then redis.call('ZADD', T .. ':due', first, name) else redis.call('ZREM', T .. ':due', name) end
  return handled, left
end

-- How many pools each sweep call files on its walk over every pool.
local WALK = 16

-- The sweep: the clock applied to the pools due, about BOUND timers a call (twice that at most);
-- purges; keys of deleted pools; and `default` made again when Redis lost it. A walk first files
-- WALK pools a call in name order, wrapping around, so that a pool missing from T:due (sessions an
-- older version of this code added) is found within (pools / WALK) calls: a minute at 1000 pools.
-- ARGV: 7 count of default config fields, then the fields.
function ops.tick()
  if not open('default') then init_pool('default', pairs_at(8, tonumber(ARGV[7]))) end
  local reached = redis.call('GET', T .. ':walk')
  local walk = redis.call('ZRANGEBYLEX', T .. ':pools', reached and '(' .. reached or '-', '+', 'LIMIT', 0, WALK)
  for _, name in ipairs(walk) do visit(name, 0) end
  if #walk == WALK then redis.call('SET', T .. ':walk', walk[#walk]) else redis.call('DEL', T .. ':walk') end
  local pools = redis.call('ZRANGEBYSCORE', T .. ':due', '-inf', num(NOW), 'LIMIT', 0, BOUND)
  local budget, left = BOUND, #pools == BOUND
  for _, name in ipairs(pools) do
    if budget <= 0 then
      left = true
      break
    end
    local handled, more = visit(name, budget)
    budget = budget - handled
    if more then left = true end
  end
  if purge(BOUND) == BOUND then left = true end
  if bury(BOUND) == BOUND then left = true end
  return ok(left and 1 or 0)
end

-- The version of the key layout this code reads and writes. A server refuses a store written in
-- another rather than misread it (a key of another type fails a call halfway, and Redis does not
-- undo a function's first writes). 2: `free` became a sorted set.
local LAYOUT = '2'

-- Makes the `default` pool when it does not exist, after checking the layout (at connect, and when
-- Redis lost its data). ARGV: 7 count of config fields, then the fields.
function ops.ensure_default()
  local found = redis.call('GET', T .. ':layout')
  if found and found ~= LAYOUT then
    return err('LAYOUT', 'the keys under ' .. T .. ' have layout ' .. found .. ', this version reads layout '
      .. LAYOUT .. ': migrate them with the version that wrote them (session-pool migrate), or use another --redis-key-prefix')
  end
  if not found then
    for _, name in ipairs(redis.call('ZRANGE', T .. ':pools', 0, -1)) do
      local K = open(name)
      if K and redis.call('TYPE', K.free)['ok'] == 'set' then
        return err('LAYOUT', 'the keys under ' .. T .. ' have layout 1 (pool ' .. name .. '), this version reads layout '
          .. LAYOUT .. ': migrate them with the version that wrote them (session-pool migrate), or use another --redis-key-prefix')
      end
    end
    redis.call('SET', T .. ':layout', LAYOUT)
  end
  if not open('default') then init_pool('default', pairs_at(8, tonumber(ARGV[7]))) end
  return ok()
end

local function entry(_, args)
  ARGV = args
  op, T, POOL = ARGV[1], ARGV[2], ARGV[3]
  MAX, RETENTION, BOUND = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
  local t = redis.call('TIME')
  NOW = tonumber(t[1]) * 1000000 + math.floor(tonumber(t[2]) / 1000) * 1000
  EVENTS = {}
  local run = ops[op]
  if not run then return err('INTERNAL', 'unknown operation ' .. tostring(op)) end
  return run()
end

redis.register_function('session_pool_@VERSION@', entry)
