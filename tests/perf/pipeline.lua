-- wrk script: HTTP/1.1 pipelining, 16 GET /hello requests written at once on each connection.
init = function(args)
  local batch = {}
  for i = 1, 16 do batch[i] = wrk.format(nil, "/hello") end
  pipelined = table.concat(batch)
end

request = function() return pipelined end
