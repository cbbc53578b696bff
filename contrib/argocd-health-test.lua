-- Runs argocd-health.lua against TenantAccess fixtures, as Argo CD would (Lua 5.1):
--   lua5.1 contrib/argocd-health-test.lua
-- Exit status 0 when every case passes. tests/chart.rs runs it when a Lua 5.1 interpreter
-- is installed.
local dir = (arg and arg[0] or ""):match("^(.*)/[^/]*$") or "."
local check = assert(loadfile(dir .. "/argocd-health.lua"))

local function ready(status, reason, message)
  return { type = "Ready", status = status, reason = reason, message = message }
end

local cases = {
  {
    name = "no status yet",
    obj = { metadata = { generation = 1 } },
    status = "Progressing",
  },
  {
    name = "ready at the current generation",
    obj = {
      metadata = { generation = 3 },
      status = { observedGeneration = 3, conditions = {
        { type = "TokenIssued", status = "True", reason = "Issued", message = "token revision 1" },
        ready("True", "Ready", "token revision 1 expires at 2026-01-01T00:00:00Z"),
      } },
    },
    status = "Healthy",
    message = "Ready: token revision 1 expires at 2026-01-01T00:00:00Z",
  },
  {
    name = "ready, but for an older generation",
    obj = {
      metadata = { generation = 4 },
      status = { observedGeneration = 3, conditions = { ready("True", "Ready", "ok") } },
    },
    status = "Progressing",
    message = "Waiting for the operator to process generation 4",
  },
  {
    name = "status without observedGeneration",
    obj = { metadata = { generation = 1 }, status = { conditions = { ready("True", "Ready", "ok") } } },
    status = "Progressing",
  },
  {
    name = "refused spec",
    obj = {
      metadata = { generation = 2 },
      status = { observedGeneration = 2, conditions = {
        ready("False", "InvalidSpec", "spec.scopes[0].fixedParams.org: empty value; nothing is issued until the spec is fixed"),
      } },
    },
    status = "Degraded",
    message = "InvalidSpec: spec.scopes[0].fixedParams.org: empty value; nothing is issued until the spec is fixed",
  },
  {
    name = "Ready Unknown",
    obj = { metadata = { generation = 1 }, status = { observedGeneration = 1, conditions = { ready("Unknown", "Pending", "") } } },
    status = "Progressing",
  },
  {
    name = "no Ready condition",
    obj = { metadata = { generation = 1 }, status = { observedGeneration = 1, conditions = {} } },
    status = "Progressing",
  },
  {
    name = "token Secret current, Clerk template not synced",
    obj = {
      metadata = { generation = 2 },
      status = { observedGeneration = 2, conditions = {
        { type = "TokenIssued", status = "True", reason = "Issued", message = "token revision 1" },
        { type = "ClerkTemplateSynced", status = "False", reason = "ClerkUnavailable", message = "Clerk answered 503" },
        ready("True", "Degraded", "token in Secret acme-token is current; the Clerk template is not synced (ClerkUnavailable: Clerk answered 503)"),
      } },
    },
    status = "Healthy",
    message = "Degraded: token in Secret acme-token is current; the Clerk template is not synced (ClerkUnavailable: Clerk answered 503)",
  },
  {
    name = "Clerk template only, not synced",
    obj = {
      metadata = { generation = 1 },
      status = { observedGeneration = 1, conditions = {
        { type = "ClerkTemplateSynced", status = "False", reason = "RateLimited", message = "Clerk throttled" },
        ready("False", "RateLimited", "Clerk throttled"),
      } },
    },
    status = "Degraded",
    message = "RateLimited: Clerk throttled",
  },
  {
    name = "Ready False without a message",
    obj = { metadata = { generation = 1 }, status = { observedGeneration = 1, conditions = { ready("False", "SecretConflict", nil) } } },
    status = "Degraded",
    message = "SecretConflict",
  },
}

local failures = 0
for _, case in ipairs(cases) do
  obj = case.obj
  local ok, hs = pcall(check)
  local problem = nil
  if not ok then
    problem = "error: " .. tostring(hs)
  elseif hs.status ~= case.status then
    problem = "status " .. tostring(hs.status) .. ", want " .. case.status
  elseif case.message ~= nil and hs.message ~= case.message then
    problem = "message " .. tostring(hs.message) .. ", want " .. case.message
  end
  if problem then
    failures = failures + 1
    print("FAIL " .. case.name .. ": " .. problem)
  else
    print("ok   " .. case.name .. " -> " .. hs.status)
  end
end
if failures > 0 then
  os.exit(1)
end
