//! The pure rules players meet, as plain data and functions (no sockets, no HTTP, no clock but
//! the one passed in), tested in microseconds: who sees what ([`interest`]), which commands
//! pass ([`controls`]), which chat lines pass and who hears them ([`chat`]), who may hold a
//! game session ([`sessions`]) and which gateway holds which player ([`gateway_registry`]).
//! The game ports and links (`gateway`, `gateway_node`, `gateway_link`, `server`) are the I/O
//! shell around them; the authority's own rules are in `authority`.

pub mod chat;
pub mod controls;
pub mod gateway_registry;
pub mod interest;
pub mod sessions;
