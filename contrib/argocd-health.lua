-- Argo CD health check for tenantaccess.dev resources (TenantAccess; the same rules fit
-- TinybirdWorkspace and ClusterTinybirdWorkspace, which have the same Ready condition and
-- status.observedGeneration).
--
--   Healthy      Ready=True and the operator has seen the current generation. Ready says
--                whether what the workloads use is usable: a current token Secret whose Clerk
--                template is not synced (Clerk down or throttled) is Ready with reason
--                Degraded, shown here as Healthy with the message "Degraded: ..." (the app that
--                mounts the Secret can be deployed; ClerkTemplateSynced=False says the rest).
--   Progressing  no status yet, a generation the operator has not processed yet, or Ready
--                missing or Unknown.
--   Degraded     Ready=False: the condition's reason and message (e.g. "InvalidSpec: ...",
--                "NamespaceNotAllowed: ...", "SecretConflict: ...", or a Clerk reason for a
--                TenantAccess whose only output is its Clerk template).
--
-- Argo CD runs this with gopher-lua (Lua 5.1). See contrib/README.md for argocd-cm.
local hs = {}

if obj.status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to process the resource"
  return hs
end

local generation = nil
if obj.metadata ~= nil then
  generation = obj.metadata.generation
end
local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to process generation " .. tostring(generation)
  return hs
end

local ready = nil
if obj.status.conditions ~= nil then
  for _, condition in ipairs(obj.status.conditions) do
    if condition.type == "Ready" then
      ready = condition
    end
  end
end

if ready == nil or ready.status == "Unknown" then
  hs.status = "Progressing"
  hs.message = "Waiting for the Ready condition"
  return hs
end

local detail = ready.reason or ""
if ready.message ~= nil and ready.message ~= "" then
  if detail ~= "" then
    detail = detail .. ": " .. ready.message
  else
    detail = ready.message
  end
end

if ready.status == "True" then
  hs.status = "Healthy"
  hs.message = detail
  return hs
end

hs.status = "Degraded"
hs.message = detail
return hs
