// Preloaded into the suite's origin server (node --require): server/server.mjs calls
// server.listen(port), which binds every interface. A listen given only a port binds
// 127.0.0.1 here: the test origin is never reachable from the network.
'use strict'
const net = require('net')
const listen = net.Server.prototype.listen
net.Server.prototype.listen = function (...args) {
  const portOnly = /^\d+$/.test(String(args[0])) && (args.length === 1 || typeof args[1] === 'function')
  if (portOnly) args.splice(1, 0, '127.0.0.1')
  return listen.apply(this, args)
}
