// carechain web console: reads the chain through this node's API; everything that needs the
// patient's keys is asked of the patient's local agent (`carechain agent --serve`), which signs
// on the patient's own computer. No build step, no framework, no private key in the page.
"use strict";

const TEXT = {
  en: {
    title: "carechain console", patient_view: "Patient", operator_view: "Operator",
    language: "Language", your_agent: "Your agent", agent_address: "Agent address",
    agent_explained: "Your keys stay with your agent on your own computer; this page asks it to sign. The node never sees a key.",
    connect: "Connect", vaults: "Your records, by data type", access_now: "Who can read your data now",
    institution: "Institution", data_type: "Data type", data_types: "Data types", until: "Until",
    purpose: "Purpose", grant_access: "Grant access", days: "Days", grant: "Grant",
    purpose_TREAT: "Treatment", purpose_HRESCH: "Research", purpose_HPAYMT: "Payment",
    pending: "Waiting for your signature", approve: "Sign", refuse: "Refuse", revoke: "Revoke",
    pending_explained: "An institution started these. Signing adds your signature to theirs and the chain carries out the action; refusing leaves it unsigned until it expires.",
    rules: "Automatic co-signing rules", rule_name: "Name", kinds: "Kinds", decision: "Decision",
    sign: "sign", add_rule: "Add rule", remove: "Remove", timeline: "Access timeline",
    reads_per_day: "Reads per day", height: "Height", time: "Time", event: "Event",
    details: "Details", node_status: "This node", validators: "Validators", name: "Name",
    power: "Power", connected: "Connected", signed_recent: "Signed (last 20 blocks)",
    state: "State", recent_blocks: "Recent blocks", txs: "Transactions", round: "Round",
    certificate: "Certificate", governance: "Governance proposals awaiting this hospital",
    emergencies: "Emergency accesses awaiting review", active: "active", missing: "missing",
    this_node: "this node", yes: "yes", no: "no", download: "Download", date: "Date",
    provider: "Provider", size: "Size", records: "records", none: "nothing here",
    no_agent: "Connect your agent to act on your data.", done: "Done.",
    signing_means: "Signing means: {initiator} asks to {action}.",
    action_record_put: "add a {type} record to your vault", action_grant: "grant access",
    action_other: "carry out a {kind} transaction",
    kind_grant: "grant", kind_read: "read", kind_emergency: "emergency", kind_erasure: "erasure",
    kind_recovery: "key recovery (pending: if you did not ask for it, cancel it with a key you hold)",
    detail_lost: "lost key", detail_replacement: "replacement key", detail_ready: "may finish from",
    status_pending: "pending",
    guardians_of_you: "Your guardians: {list}", minor: "a minor's account until the handover",
    you_act_for: "You act for {patient} ({scope})",
    scope_cosign: "co-signs and reads", scope_full: "acts for the patient",
    height_label: "Height", round_label: "Round", peers: "Peers", syncing: "Syncing",
    mempool: "Mempool", partials: "Partial pool", signers: "{n} signatures", you: "you",
    no_reads: "No reads yet.",
    verified_by: "Verified at height {height} by {k} of {n} validators' power: each entry proved against a header your agent trusts from your own genesis, the list proved whole.",
    not_verified: "Not verified: read from this node alone. Start your agent with --genesis YOUR_COPY_OF_genesis.json to check every answer.",
    node_lied: "This node's answer did not verify, so nothing it sent is shown here: {reason}",
    agent_unreachable: "Your agent at {url} does not answer. Start it on this computer with `carechain agent --serve 127.0.0.1:26690 --key …`, then press Connect.",
    node_unreachable: "This node does not answer at {url}. Is `carechain start` running? Reload when it is.",
    confirm_revoke: "Revoke {institution}'s access to your {type} records? The vault's key changes at once, so they cannot read what is added from now on; what they already read stays read.",
    purpose_ETREAT: "Emergency treatment", purpose_CAREMGT: "Care management", purpose_HOPERAT: "Hospital operations",
    purpose_PATRQT: "At the patient's request", purpose_PUBHLTH: "Public health", purpose_HDIRECT: "Directory",
    detail_record: "record", detail_grant: "grant", detail_access: "access", detail_valid_from: "from",
    detail_valid_until: "until", detail_purpose: "purpose", detail_revoked_height: "revoked at height",
    detail_emergency: "emergency", detail_reason: "reason", detail_until: "until",
    detail_trusted_party: "trusted party", detail_status: "status", detail_reviewed_height: "reviewed at height",
    status_unreviewed: "not yet reviewed", status_appropriate: "judged appropriate", status_inappropriate: "judged inappropriate",
    access_read: "read", access_read_write: "read and write",
    reason_unconscious: "patient unconscious or unable to consent",
    "reason_life-threatening": "life-threatening condition needing immediate history",
    "reason_patient-unreachable": "patient and representatives cannot be reached in time",
    "reason_mass-casualty": "mass-casualty incident",
  },
  zh: {
    title: "carechain 控制台", patient_view: "患者", operator_view: "运维",
    language: "语言", your_agent: "您的代理", agent_address: "代理地址",
    agent_explained: "您的密钥保存在您自己电脑上的代理中；本页面请它签名。节点永远看不到密钥。",
    connect: "连接", vaults: "您的数据（按数据类型）", access_now: "当前谁可以读取您的数据",
    institution: "机构", data_type: "数据类型", data_types: "数据类型", until: "截止",
    purpose: "目的", grant_access: "授予访问权限", days: "天数", grant: "授权",
    purpose_TREAT: "治疗", purpose_HRESCH: "研究", purpose_HPAYMT: "支付",
    pending: "等待您签名", approve: "签名", refuse: "拒绝", revoke: "撤销",
    pending_explained: "这些由机构发起。签名即在其签名之外加上您的签名，链将执行该操作；拒绝则不签名，直至其过期。",
    rules: "自动联署规则", rule_name: "名称", kinds: "类型", decision: "决定",
    sign: "签名", add_rule: "添加规则", remove: "删除", timeline: "访问时间线",
    reads_per_day: "每日读取次数", height: "高度", time: "时间", event: "事件",
    details: "详情", node_status: "本节点", validators: "验证者", name: "名称",
    power: "权重", connected: "已连接", signed_recent: "签名数（最近 20 个区块）",
    state: "状态", recent_blocks: "最近区块", txs: "交易", round: "轮次",
    certificate: "证书", governance: "等待本医院批准的治理提案",
    emergencies: "等待审查的紧急访问", active: "正常", missing: "缺失",
    this_node: "本节点", yes: "是", no: "否", download: "下载", date: "日期",
    provider: "提供者", size: "大小", records: "条记录", none: "暂无",
    no_agent: "请连接您的代理以操作您的数据。", done: "完成。",
    signing_means: "签名意味着：{initiator} 请求{action}。",
    action_record_put: "向您的数据库添加一条 {type} 记录", action_grant: "授予访问权限",
    action_other: "执行一笔 {kind} 交易",
    kind_grant: "授权", kind_read: "读取", kind_emergency: "紧急访问", kind_erasure: "删除",
    kind_recovery: "密钥恢复（待完成：如非您本人申请，请用您持有的密钥取消）",
    detail_lost: "丢失的密钥", detail_replacement: "替换密钥", detail_ready: "最早完成于",
    status_pending: "待完成",
    guardians_of_you: "您的监护人：{list}", minor: "未成年人账户（移交前）",
    you_act_for: "您代表 {patient} 行事（{scope}）",
    scope_cosign: "联署并可读取", scope_full: "全权代理",
    height_label: "高度", round_label: "轮次", peers: "对等节点", syncing: "同步中",
    mempool: "交易池", partials: "待签交易池", signers: "{n} 个签名", you: "您本人",
    no_reads: "尚无读取记录。",
    verified_by: "已验证：高度 {height}，由验证者权重 {n} 中的 {k} 签署；每一条都已对照您的代理依据您自己的创世文件所信任的区块头证明，且列表完整。",
    not_verified: "未验证：仅从本节点读取。请用 --genesis 您自己的 genesis.json 启动代理，以核对每个回答。",
    node_lied: "本节点的回答未通过验证，因此此处不显示其任何内容：{reason}",
    agent_unreachable: "您在 {url} 的代理没有响应。请在本机用 `carechain agent --serve 127.0.0.1:26690 --key …` 启动它，然后点击“连接”。",
    node_unreachable: "本节点在 {url} 没有响应。`carechain start` 是否在运行？运行后请刷新页面。",
    confirm_revoke: "撤销 {institution} 对您的 {type} 记录的访问权限？数据库密钥立即更换，此后新增的内容对方无法读取；已读取的内容无法收回。",
    purpose_ETREAT: "急救治疗", purpose_CAREMGT: "护理管理", purpose_HOPERAT: "医院运营",
    purpose_PATRQT: "应患者要求", purpose_PUBHLTH: "公共卫生", purpose_HDIRECT: "名录",
    detail_record: "记录", detail_grant: "授权", detail_access: "权限", detail_valid_from: "起始",
    detail_valid_until: "截止", detail_purpose: "目的", detail_revoked_height: "撤销于高度",
    detail_emergency: "紧急访问", detail_reason: "原因", detail_until: "截止",
    detail_trusted_party: "可信方", detail_status: "状态", detail_reviewed_height: "审查于高度",
    status_unreviewed: "尚未审查", status_appropriate: "经审查合理", status_inappropriate: "经审查不合理",
    access_read: "读取", access_read_write: "读写",
    reason_unconscious: "患者昏迷或无法表示同意",
    "reason_life-threatening": "危及生命，需立即查阅病史",
    "reason_patient-unreachable": "无法及时联系到患者及其代理人",
    "reason_mass-casualty": "重大伤亡事件",
  },
};

const state = { lang: localStorage.getItem("carechain.lang") || "en", agent: "", identity: null,
  institutions: new Map(), vaults: [] };

function t(key, values = {}) {
  const text = (TEXT[state.lang] && TEXT[state.lang][key]) || TEXT.en[key] || key;
  return text.replace(/\{(\w+)\}/g, (_, name) => String(values[name] ?? ""));
}

function translatePage() {
  document.documentElement.lang = state.lang === "zh" ? "zh-CN" : "en";
  for (const element of document.querySelectorAll("[data-t]")) {
    element.textContent = t(element.dataset.t);
  }
}

function say(text, isError = false) {
  const message = document.getElementById("message");
  message.textContent = text;
  message.className = isError ? "error" : "";
}

// A fetch that cannot reach its server rejects with a TypeError whose text ("Failed to fetch")
// tells nobody what to do: say which server, and how to bring it back.
async function reach(url, unreachable, options = undefined) {
  try { return await fetch(url, options); } catch (error) {
    throw new Error(t(unreachable, { url: new URL(url, location.href).origin }));
  }
}

async function api(path) {
  const response = await reach(path, "node_unreachable");
  const body = await response.json();
  if (!response.ok) throw new Error(`${body.error}: ${body.message}`);
  return body;
}

async function agent(path, method = "GET", body = undefined) {
  if (!state.agent) throw new Error(t("no_agent"));
  const response = await reach(state.agent + path, "agent_unreachable", {
    method, headers: body ? { "Content-Type": "application/json" } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  if (!response.ok) {
    const problem = await response.json().catch(() => ({ error: response.status, message: "" }));
    const error = new Error(`${problem.error}: ${problem.message}`);
    error.status = response.status; // 502: the node's answer did not verify
    throw error;
  }
  return response;
}

function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text;
  row.appendChild(td);
  return td;
}

function button(label, action) {
  const element = document.createElement("button");
  element.type = "button";
  element.textContent = label;
  element.addEventListener("click", async () => {
    element.disabled = true;
    try { if (await action() !== false) say(t("done")); } catch (error) { say(String(error.message || error), true); }
    finally { element.disabled = false; }
  });
  return element;
}

function when(ms) { return ms ? new Date(ms).toISOString().replace("T", " ").slice(0, 16) : ""; }
function who(key) {
  if (state.identity && state.identity.keys.includes(key)) return t("you");
  return state.institutions.get(key) || (key ? key.slice(0, 12) + "…" : "—");
}

// a code's words where the console has them, else the code itself
function words(prefix, code) {
  const text = t(`${prefix}_${code}`);
  return text === `${prefix}_${code}` ? String(code) : text;
}

function detailValue(key, value) {
  if (key.endsWith("_ms")) return when(value);
  if (key === "purpose") return words("purpose", value);
  if (key === "status") return words("status", value);
  if (key === "access") return words("access", value);
  if (key === "reason") return words("reason", value);
  if (key === "trusted_party" || key === "lost" || key === "replacement") return who(value);
  return String(value);
}

function detailText(detail) {
  return Object.entries(detail).filter(([, v]) => v !== null && v !== "")
    .map(([k, v]) => `${words("detail", k.replace(/_ms$/, ""))}: ${detailValue(k, v)}`).join("; ");
}

// At phone width a table's rows become cards (console.css); each cell carries its column's
// name so the card can say what each value is.
function labelCells(table) {
  const names = [...table.tHead.rows[0].cells].map((th) => th.textContent);
  for (const body of table.tBodies) {
    for (const row of body.rows) {
      if (row.cells.length === 1 && row.cells[0].colSpan > 1) continue; // "nothing here"
      [...row.cells].forEach((td, index) => { if (names[index]) td.dataset.label = names[index]; });
    }
  }
}

function fill(tbody, rows) {
  tbody.replaceChildren();
  if (!rows.length) {
    const row = tbody.insertRow();
    const td = cell(row, t("none"));
    td.colSpan = 6;
  }
  for (const build of rows) build(tbody.insertRow());
  labelCells(tbody.closest("table"));
}

// -- the patient's view ---------------------------------------------------------------------
// A list the patient sees is read by the agent's light client when the agent verifies (each
// entry proved against a header it trusts from the patient's own genesis, the list proved
// whole), else from this node alone; the panel's mark says which. A node whose answer does
// not verify is named in red and nothing it sent is shown.
const MARKS = { verified: 0, unverified: 1, lied: 2 };

function mark(panel, kind, text) {
  const element = document.getElementById(`proof-${panel}`);
  const now = element.dataset.mark;
  if (now && MARKS[now] > MARKS[kind]) return; // a lie stays in view until the page reloads
  element.dataset.mark = kind;
  element.className = `proof ${kind}`;
  element.textContent = text;
}

// The agent answers with what the node's list route answers (`node/light/lists.py`).
async function proved(panel, kind, id, nodePath) {
  if (state.identity && state.identity.verifying) {
    let answer;
    try {
      answer = await (await agent(`/agent/v1/verified/${kind}/${id}`)).json();
    } catch (error) {
      // only an answer that did not verify is a lie; an agent that is down, or a list too
      // long to prove at once, is said as it is
      const lied = error.status === 502;
      mark(panel, lied ? "lied" : "unverified", lied ? t("node_lied", { reason: String(error.message || error) }) : String(error.message || error));
      throw error;
    }
    mark(panel, "verified", t("verified_by", { height: answer.height, k: answer.signed_power, n: answer.total_power }));
    return answer.value;
  }
  mark(panel, "unverified", t("not_verified"));
  return api(nodePath);
}

async function loadPatient() {
  for (const element of document.querySelectorAll(".proof")) {
    delete element.dataset.mark; element.className = "proof"; element.textContent = "";
  }
  // names and choices from chain state: genesis's institutions and those governance added
  const { institutions } = await api("/v1/institutions");
  state.institutions = new Map(institutions.map((i) => [i.public_key, i.name]));
  const hospitals = institutions.filter((i) => i.kind === "hospital" && i.active);
  for (const id of ["grant-institution", "rule-institution"]) {
    const select = document.getElementById(id);
    select.replaceChildren(...hospitals.map((i) => {
      const option = document.createElement("option");
      option.value = i.public_key; option.textContent = i.name; return option;
    }));
  }
  if (!state.agent) { say(t("no_agent")); return; }
  state.identity = await (await agent("/agent/v1/identity")).json();
  document.getElementById("identity").textContent = state.identity.address;
  await showGuardians();
  const account = state.identity.account;
  state.vaults = (await proved("vaults", "vaults", account, `/v1/accounts/${account}/vaults`)).vaults;
  await Promise.all([showVaults(), showGrants(), showPending(), showRules(), showTimeline()]);
}

// Who acts for whom: this patient's guardians, and the patients these keys are a guardian of.
async function showGuardians() {
  const account = await api(`/v1/accounts/${state.identity.account}`).catch(() => null);
  const wards = (await Promise.all(
    state.identity.keys.map((key) => api(`/v1/guardians/${key}`)),
  )).flatMap((answer) => answer.wards);
  const lines = [];
  if (account && account.guardians.length) {
    const list = account.guardians.map((g) => `${g.key.slice(0, 12)}… (${t(`scope_${g.scope}`)})`);
    lines.push(t("guardians_of_you", { list: list.join(", ") }) + (account.minor ? ` · ${t("minor")}` : ""));
  }
  for (const ward of wards) lines.push(t("you_act_for", { patient: ward.patient, scope: t(`scope_${ward.scope}`) }));
  document.getElementById("acts-for").textContent = lines.join(" — ");
}

async function showVaults() {
  const holder = document.getElementById("vaults");
  holder.replaceChildren();
  const types = document.getElementById("grant-types");
  types.replaceChildren();
  for (const vault of state.vaults) {
    const { records } = await proved("vaults", "records", vault.vault_id, `/v1/vaults/${vault.vault_id}/records`);
    const details = document.createElement("details");
    details.open = true;
    const summary = document.createElement("summary");
    summary.textContent = `${vault.data_type} (${records.length} ${t("records")})`;
    details.appendChild(summary);
    const table = document.createElement("table");
    table.className = "records";
    const head = table.createTHead().insertRow();
    for (const key of ["data_type", "date", "provider", "size"]) cell(head, t(key));
    cell(head, "");
    const body = table.createTBody(); // (a table's insertRow would add to the head's rows)
    for (const record of records.filter((r) => r.erased_height === null)) {
      const row = body.insertRow();
      cell(row, record.data_type);
      cell(row, when(record.record_time_ms));
      cell(row, who(record.author));
      cell(row, `${record.size_bytes.toLocaleString()} B`);
      cell(row, "").appendChild(button(t("download"), () => download(vault, record)));
    }
    labelCells(table);
    details.appendChild(table);
    holder.appendChild(details);
    const label = document.createElement("label");
    const box = document.createElement("input");
    box.type = "checkbox"; box.value = vault.vault_id; box.name = "grant-type";
    label.append(box, ` ${vault.data_type}`);
    types.appendChild(label);
  }
}

async function download(vault, record) {
  const response = await agent(`/agent/v1/records/${vault.vault_id}/${record.record_id}`);
  const link = document.createElement("a");
  link.href = URL.createObjectURL(await response.blob());
  link.download = `${vault.data_type}-${record.record_id}.bin`;
  link.click();
  URL.revokeObjectURL(link.href);
}

async function showGrants() {
  const now = Date.now();
  const rows = [];
  for (const vault of state.vaults) {
    const { grants } = await proved("grants", "grants", vault.vault_id, `/v1/vaults/${vault.vault_id}/grants`);
    for (const grant of grants) {
      if (grant.revoked_height !== null || grant.valid_until_ms <= now) continue;
      rows.push((row) => {
        row.dataset.grant = grant.grant_id;
        cell(row, who(grant.grantee));
        cell(row, vault.data_type);
        cell(row, when(grant.valid_until_ms));
        cell(row, words("purpose", grant.purpose));
        cell(row, "").appendChild(button(t("revoke"), async () => {
          // revoking rotates the vault's key for every member: not a click to make by mistake
          const question = t("confirm_revoke", { institution: who(grant.grantee), type: vault.data_type });
          if (!window.confirm(question)) return false;
          await agent(`/agent/v1/grants/${grant.grant_id}/revoke`, "POST", { vault: vault.vault_id });
          await showGrants();
        }));
      });
    }
  }
  fill(document.querySelector("#grants tbody"), rows);
}

function describe(partial) {
  const initiator = partial.signers.map(who).filter((name) => !name.endsWith("…"))[0] || who(partial.signers[0]);
  const vault = state.vaults.find((v) => v.vault_id === partial.account);
  const action = partial.kind === "record.put" ? t("action_record_put", { type: vault ? vault.data_type : "" })
    : partial.kind === "grant" ? t("action_grant") : t("action_other", { kind: partial.kind });
  return t("signing_means", { initiator, action });
}

async function showPending() {
  const list = document.getElementById("pending");
  list.replaceChildren();
  const key = state.identity.keys[0];
  const [{ partials }, refused] = await Promise.all([
    api(`/v1/partials?awaiting=${key}`), agent("/agent/v1/partials/refused").then((r) => r.json()),
  ]);
  const waiting = partials.filter((p) => !refused.refused.includes(p.id));
  if (!waiting.length) { const item = document.createElement("li"); item.textContent = t("none"); list.appendChild(item); }
  for (const partial of waiting) {
    const item = document.createElement("li");
    item.dataset.partial = partial.id;
    const text = document.createElement("span");
    text.textContent = `${partial.kind} — ${describe(partial)} `;
    item.append(text,
      button(t("approve"), async () => { await agent(`/agent/v1/partials/${partial.id}/approve`, "POST"); await showPending(); }),
      button(t("refuse"), async () => { await agent(`/agent/v1/partials/${partial.id}/refuse`, "POST"); await showPending(); }));
    list.appendChild(item);
  }
}

async function showRules() {
  const { rules } = await (await agent("/agent/v1/rules")).json();
  state.rules = rules;
  fill(document.querySelector("#rules tbody"), rules.map((rule, index) => (row) => {
    cell(row, rule.name);
    cell(row, rule.institutions.map(who).join(", "));
    cell(row, rule.kinds.join(", "));
    cell(row, (rule.data_types || []).join(", ") || "*");
    cell(row, t(rule.decision));
    cell(row, "").appendChild(button(t("remove"), async () => {
      await saveRules(state.rules.filter((_, i) => i !== index));
    }));
  }));
}

async function saveRules(rules) {
  await agent("/agent/v1/rules", "PUT", { rules });
  await showRules();
}

async function showTimeline() {
  const account = state.identity.account;
  const { events } = await proved("timeline", "timeline", account, `/v1/accounts/${account}/timeline`);
  fill(document.querySelector("#timeline tbody"), events.map((event) => (row) => {
    if (event.kind === "recovery") row.classList.add("alarm"); // someone may be taking over
    cell(row, String(event.height));
    cell(row, when(event.time_ms));
    cell(row, t(`kind_${event.kind}`));
    cell(row, who(event.actor));
    cell(row, event.data_type);
    cell(row, detailText(event.detail));
  }));
  drawReads(events.filter((e) => e.kind === "read" && e.time_ms));
}

function drawReads(reads) {
  const svg = document.getElementById("reads-chart");
  svg.replaceChildren();
  const perDay = new Map();
  for (const read of reads) {
    const day = new Date(read.time_ms).toISOString().slice(0, 10);
    perDay.set(day, (perDay.get(day) || 0) + 1);
  }
  const days = [...perDay.keys()].sort().slice(-30);
  const most = Math.max(1, ...perDay.values());
  const width = Math.min(40, 600 / Math.max(days.length, 1));
  const ns = "http://www.w3.org/2000/svg";
  days.forEach((day, index) => {
    const height = (perDay.get(day) / most) * 90;
    const bar = document.createElementNS(ns, "rect");
    bar.setAttribute("x", String(index * width + 2)); bar.setAttribute("y", String(100 - height));
    bar.setAttribute("width", String(Math.max(width - 4, 2))); bar.setAttribute("height", String(height));
    const title = document.createElementNS(ns, "title");
    title.textContent = `${day}: ${perDay.get(day)}`;
    bar.appendChild(title);
    svg.appendChild(bar);
    const label = document.createElementNS(ns, "text");
    label.setAttribute("x", String(index * width + 2)); label.setAttribute("y", "115");
    label.textContent = day.slice(5);
    svg.appendChild(label);
  });
  if (!days.length) {
    const empty = document.createElementNS(ns, "text");
    empty.setAttribute("x", "4"); empty.setAttribute("y", "60");
    empty.textContent = t("no_reads");
    svg.appendChild(empty);
  }
  svg.setAttribute("aria-label", `${t("reads_per_day")}: ${days.map((d) => `${d} ${perDay.get(d)}`).join(", ") || t("no_reads")}`);
}

// -- the operator's view --------------------------------------------------------------------
async function loadOperator() {
  const status = await api("/v1/status");
  const list = document.getElementById("node-status");
  list.replaceChildren();
  const facts = [
    [t("name"), status.moniker], [t("height_label"), status.height], [t("round_label"), status.round],
    [t("peers"), status.peers.length], [t("syncing"), status.syncing ? t("yes") : t("no")],
    [t("mempool"), status.mempool], [t("partials"), status.partials],
  ];
  for (const [term, value] of facts) {
    const dt = document.createElement("dt"); dt.textContent = term;
    const dd = document.createElement("dd"); dd.textContent = String(value);
    list.append(dt, dd);
  }
  const blocks = [];
  for (let h = status.height; h > Math.max(0, status.height - 20); h -= 1) blocks.push(await api(`/v1/blocks/${h}`));
  const signedBy = new Map();
  for (const block of blocks) {  // in the certificate, or late (after it was made)
    const late = (block.late_precommits || []).map((p) => p.validator);
    for (const key of [...block.signers, ...late]) signedBy.set(key, (signedBy.get(key) || 0) + 1);
  }
  const self = status.node_id;
  const validators = [...status.validators].sort((a, b) => a.name.localeCompare(b.name));
  fill(document.querySelector("#validators tbody"), validators.map((v) => (row) => {
    row.dataset.validator = v.name;
    const connected = v.node_id === self || status.peers.includes(v.node_id);
    const signed = signedBy.get(v.public_key) || 0;
    const missing = !connected && (blocks.length === 0 || signed < blocks.length);
    cell(row, v.name);
    cell(row, String(v.power));
    cell(row, v.node_id === self ? t("this_node") : connected ? t("yes") : t("no"));
    cell(row, `${signed}/${blocks.length}`);
    const stateCell = cell(row, missing ? t("missing") : t("active"));
    stateCell.className = missing ? "missing" : "active";
  }));
  fill(document.querySelector("#blocks tbody"), blocks.slice(0, 10).map((block) => (row) => {
    cell(row, String(block.height));
    cell(row, when(block.header.time_ms));
    cell(row, String(block.txs.length));
    cell(row, String(block.header.round));
    cell(row, t("signers", { n: block.signers.length }));
  }));
  const governance = document.getElementById("governance");
  governance.replaceChildren();
  if (status.validator_key) {
    const { partials } = await api(`/v1/partials?awaiting=${status.validator_key}`);
    for (const partial of partials) {
      const item = document.createElement("li");
      item.textContent = `${partial.kind} ${partial.id.slice(0, 16)}… (${t("signers", { n: partial.signers.length })})`;
      governance.appendChild(item);
    }
  }
  if (!governance.children.length) { const item = document.createElement("li"); item.textContent = t("none"); governance.appendChild(item); }
  const { emergencies } = await api("/v1/emergencies");
  const open = document.getElementById("emergencies");
  open.replaceChildren();
  for (const emergency of emergencies.filter((e) => e.status === "unreviewed")) {
    const item = document.createElement("li");
    item.textContent = `${who(emergency.hospital)}: ${words("reason", emergency.reason)} (${words("purpose", "ETREAT")}, ${t("height")} ${emergency.opened_height})`;
    open.appendChild(item);
  }
  if (!open.children.length) { const item = document.createElement("li"); item.textContent = t("none"); open.appendChild(item); }
}

// -- wiring ---------------------------------------------------------------------------------
async function route() {
  const view = location.hash === "#/operator" ? "operator" : "patient";
  document.getElementById("patient").hidden = view !== "patient";
  document.getElementById("operator").hidden = view !== "operator";
  for (const name of ["patient", "operator"]) {
    document.getElementById(`nav-${name}`).setAttribute("aria-current", name === view ? "page" : "false");
  }
  try {
    if (view === "operator") await loadOperator(); else await loadPatient();
    document.body.dataset.loaded = view;
  } catch (error) { say(String(error.message || error), true); }
}

function wire() {
  const params = new URLSearchParams(location.search);
  state.agent = (params.get("agent") || localStorage.getItem("carechain.agent") || "").replace(/\/$/, "");
  document.getElementById("agent-url").value = state.agent;
  const language = document.getElementById("language");
  language.value = state.lang;
  language.addEventListener("change", () => {
    state.lang = language.value; localStorage.setItem("carechain.lang", state.lang);
    translatePage(); route();
  });
  document.getElementById("agent-form").addEventListener("submit", (event) => {
    event.preventDefault();
    state.agent = document.getElementById("agent-url").value.replace(/\/$/, "");
    localStorage.setItem("carechain.agent", state.agent);
    route();
  });
  document.getElementById("grant-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const chosen = [...document.querySelectorAll("input[name=grant-type]:checked")].map((b) => b.value);
    try {
      for (const vault of chosen) {
        await agent("/agent/v1/grants", "POST", {
          vault, grantee: document.getElementById("grant-institution").value,
          days: Number(document.getElementById("grant-days").value),
          purpose: document.getElementById("grant-purpose").value,
        });
      }
      say(t("done"));
      await showGrants(); await showTimeline();
    } catch (error) { say(String(error.message || error), true); }
  });
  document.getElementById("rule-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const types = document.getElementById("rule-types").value.split(",").map((s) => s.trim()).filter(Boolean);
    const rule = { name: document.getElementById("rule-name").value,
      institutions: [document.getElementById("rule-institution").value], kinds: ["record.put"],
      decision: document.getElementById("rule-decision").value };
    if (types.length) rule.data_types = types;
    try { await saveRules([...(state.rules || []), rule]); say(t("done")); }
    catch (error) { say(String(error.message || error), true); }
  });
  window.addEventListener("hashchange", route);
  translatePage();
  route();
}

document.addEventListener("DOMContentLoaded", wire);
