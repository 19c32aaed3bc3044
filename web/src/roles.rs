//! Roles and permissions: the fixed role table (integer ids, as clients see them) and the one
//! pure function, [`allowed`], that every route asks before it acts. Which company a caller may
//! act on is the other half of the check ([`Caller::company_scope`](crate::Caller)).

use serde::Serialize;

/// A role. The integer ids are part of the API (`role_id`) and never change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Role {
    /// Runs the platform: creates companies, tops up credits, acts on any company.
    Operator = 1,
    /// Everything within its own company: users, keys, settings, and what sellers and buyers do.
    CompanyAdmin = 2,
    /// Publishes: connections, assets, prices; also buys.
    Seller = 3,
    /// Buys: finds and executes assets, keeps favorites and alerts.
    Buyer = 4,
    /// Reads its company's data and the marketplace; changes nothing.
    Viewer = 5,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Operator,
        Role::CompanyAdmin,
        Role::Seller,
        Role::Buyer,
        Role::Viewer,
    ];

    pub fn id(self) -> i32 {
        self as i32
    }

    pub fn from_id(id: i32) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.id() == id)
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::CompanyAdmin => "company_admin",
            Role::Seller => "seller",
            Role::Buyer => "buyer",
            Role::Viewer => "viewer",
        }
    }

    /// True when `self` grants no more than `other`: a key or a user made by `other` may carry
    /// `self`. The roles are ordered operator > company admin > seller > buyer > viewer.
    pub fn at_most(self, other: Role) -> bool {
        self.id() >= other.id()
    }
}

/// What a caller wants to do. Every route names one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    CreateCompany,
    ReadCompany,
    UpdateCompany,
    /// List and read the company's other users.
    ReadUsers,
    ManageUsers,
    /// Create, change and revoke one's own keys.
    ManageOwnKeys,
    /// Read, change and revoke every key of the company.
    ManageCompanyKeys,
    ReadReference,
    ManageWebsites,
    ReadDashboards,
    ManageConnections,
    ManageAssets,
    ReadAssets,
    ExecuteAssets,
    ManagePrices,
    TopUpCredits,
    /// Put a company on a plan (the operator).
    SetSubscription,
    ReadLedger,
    /// Read what the company's assets sold: executions, buyers, revenue (seller analytics).
    ReadSales,
    ManageFavorites,
    ManageAlerts,
    ReadAuditLog,
}

impl Action {
    pub const ALL: [Action; 22] = [
        Action::CreateCompany,
        Action::ReadCompany,
        Action::UpdateCompany,
        Action::ReadUsers,
        Action::ManageUsers,
        Action::ManageOwnKeys,
        Action::ManageCompanyKeys,
        Action::ReadReference,
        Action::ManageWebsites,
        Action::ReadDashboards,
        Action::ManageConnections,
        Action::ManageAssets,
        Action::ReadAssets,
        Action::ExecuteAssets,
        Action::ManagePrices,
        Action::TopUpCredits,
        Action::SetSubscription,
        Action::ReadLedger,
        Action::ReadSales,
        Action::ManageFavorites,
        Action::ManageAlerts,
        Action::ReadAuditLog,
    ];
}

/// Whether `role` may perform `action` (within a company it may act on).
pub fn allowed(role: Role, action: Action) -> bool {
    use Action::*;
    match role {
        Role::Operator => true,
        Role::CompanyAdmin => !matches!(action, CreateCompany | TopUpCredits | SetSubscription),
        Role::Seller => matches!(
            action,
            ReadCompany
                | ManageOwnKeys
                | ReadReference
                | ManageWebsites
                | ReadDashboards
                | ManageConnections
                | ManageAssets
                | ReadAssets
                | ExecuteAssets
                | ManagePrices
                | ReadSales
                | ManageFavorites
                | ManageAlerts
        ),
        Role::Buyer => matches!(
            action,
            ReadCompany
                | ManageOwnKeys
                | ReadReference
                | ReadDashboards
                | ReadAssets
                | ExecuteAssets
                | ManageFavorites
                | ManageAlerts
        ),
        Role::Viewer => matches!(
            action,
            ReadCompany | ReadReference | ReadDashboards | ReadAssets
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action::*;

    /// The documented table (README "Roles"), row by row: what each role may do.
    fn expected(role: Role) -> &'static [Action] {
        match role {
            Role::Operator => &Action::ALL,
            Role::CompanyAdmin => &[
                ReadCompany,
                UpdateCompany,
                ReadUsers,
                ManageUsers,
                ManageOwnKeys,
                ManageCompanyKeys,
                ReadReference,
                ManageWebsites,
                ReadDashboards,
                ManageConnections,
                ManageAssets,
                ReadAssets,
                ExecuteAssets,
                ManagePrices,
                ReadLedger,
                ReadSales,
                ManageFavorites,
                ManageAlerts,
                ReadAuditLog,
            ],
            Role::Seller => &[
                ReadCompany,
                ManageOwnKeys,
                ReadReference,
                ManageWebsites,
                ReadDashboards,
                ManageConnections,
                ManageAssets,
                ReadAssets,
                ExecuteAssets,
                ManagePrices,
                ReadSales,
                ManageFavorites,
                ManageAlerts,
            ],
            Role::Buyer => &[
                ReadCompany,
                ManageOwnKeys,
                ReadReference,
                ReadDashboards,
                ReadAssets,
                ExecuteAssets,
                ManageFavorites,
                ManageAlerts,
            ],
            Role::Viewer => &[ReadCompany, ReadReference, ReadDashboards, ReadAssets],
        }
    }

    #[test]
    fn every_role_against_every_action_matches_the_table() {
        for role in Role::ALL {
            for action in Action::ALL {
                assert_eq!(
                    allowed(role, action),
                    expected(role).contains(&action),
                    "{role:?} / {action:?}"
                );
            }
        }
    }

    #[test]
    fn only_the_operator_creates_companies_and_tops_up() {
        for role in Role::ALL {
            let op = role == Role::Operator;
            assert_eq!(allowed(role, CreateCompany), op);
            assert_eq!(allowed(role, TopUpCredits), op);
            assert_eq!(allowed(role, SetSubscription), op);
        }
    }

    #[test]
    fn ids_round_trip_and_order_grants() {
        for role in Role::ALL {
            assert_eq!(Role::from_id(role.id()), Some(role));
        }
        assert_eq!(Role::from_id(0), None);
        assert_eq!(Role::from_id(6), None);
        assert!(Role::Buyer.at_most(Role::Seller));
        assert!(Role::Seller.at_most(Role::Seller));
        assert!(!Role::CompanyAdmin.at_most(Role::Seller));
        assert!(Role::Viewer.at_most(Role::Operator));
    }
}
