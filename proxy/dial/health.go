package dial

// Up reports whether route can be used now: false when a hop of its chain
// failed within the back-off period, or, for a failover route, when every
// member is down. Direct ("direct", or "" when it is the default) is always
// up; an unknown route is down.
func (r *Router) Up(route string) bool {
	rt, ok := r.lookup(route)
	return ok && !r.isDown(rt)
}
