//! Everything under `/ucwa/oauth/v1/applications`, one file per resource family behind one
//! dispatch (`application::ucwa`).

mod application;
mod communication;
mod conversations;
mod ctx;
mod invitations;
mod me;
mod people;

pub(crate) use application::ucwa;
